"""ExportJobs of one namespace through the synchronous Kubernetes client, for test assertions."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s

from tests.support.wait import wait_for

GROUP, VERSION, PLURAL = "exportjobs.dev", "v1alpha1", "exportjobs"


class ExportJobs:
    """Create, read, patch and delete the ExportJobs of one namespace."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = k8s.CustomObjectsApi(api)

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        """An ExportJob named `name` (a CSV of `source-bucket` by default; `source=None`: none)."""
        spec.setdefault("source", {"uri": f"s3://source-bucket/{name}.csv"})
        spec.setdefault("format", "csv")
        spec = {k: v for k, v in spec.items() if v is not None}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ExportJob",
            "metadata": {"name": name},
            "spec": spec,
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return got

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL
        )["items"]
        return items

    def names(self) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.list())

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(self, name: str, phase: str, *, timeout: float = 30) -> dict[str, Any]:
        """The status once its phase is `phase`; fail with the last status seen."""

        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        try:
            return wait_for(f"{name} to be {phase}", probe, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(self.status(name))}") from None
