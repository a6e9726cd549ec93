"""The controller's writes to the Kubernetes API, through the one thin client (`kube.KubeClient`).

Answers to writes are not parsed (`read=False`): the operator needs only success or the error,
and parsing every created Job costs event-loop time a burst of a thousand ExportJobs would feel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from export_operator import resource
from export_operator.controller.status import OWNED_FIELDS
from export_operator.kube import Kube, KubeError, collection_path, object_path


class KubeWriter:
    """Creates Jobs, patches ExportJob status, deletes, and posts Events."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (a no-op, by design)."""
        path = collection_path("batch/v1", "jobs", job["metadata"]["namespace"])
        return await _unless(self.kube.create(path, job, read=False), 409)

    async def job_exists(self, *, namespace: str, name: str) -> bool:
        """Whether the Job exists (a direct GET, for when the watch may lag)."""
        return await _unless(self.kube.get(object_path("batch/v1", "jobs", namespace, name)), 404)

    async def delete_job(self, *, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        path = object_path("batch/v1", "jobs", namespace, name)
        await _unless(self.kube.delete(path, params={"propagationPolicy": "Background"}), 404)

    async def patch_job(self, *, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of a Job (a split export's ranges Job resumed with its upload)."""
        await self.kube.patch(object_path("batch/v1", "jobs", namespace, name), patch)

    def _export_path(self, namespace: str, name: str) -> str:
        return object_path(resource.API_VERSION, resource.PLURAL, namespace, name)

    async def patch_status(
        self, *, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch `status` of an ExportJob, only if it is still the object with `uid`."""
        body = {"metadata": {"uid": uid}, "status": status}
        await self.kube.patch(f"{self._export_path(namespace, name)}/status", body, read=False)

    async def delete_export(self, *, namespace: str, name: str, uid: str) -> None:
        """Delete an ExportJob (retention), only if it is still the object with `uid`."""
        deleted = self.kube.delete(
            self._export_path(namespace, name),
            body={"preconditions": {"uid": uid}},
            params={"propagationPolicy": "Background"},
        )
        await _unless(deleted, 404, 409)  # gone, or replaced by a namesake

    async def post_event(self, event: dict[str, Any]) -> None:
        """Create a core/v1 Event (recorder.event_about builds it)."""
        namespace = event["metadata"]["namespace"]
        await self.kube.create(collection_path("v1", "events", namespace), event, read=False)


async def _unless(call: Awaitable[object], *answers: int) -> bool:
    """Await `call`: True when it succeeded, False when the API server answered one of
    `answers` (404 gone, 409 exists or conflicts); any other failure raises."""
    try:
        await call
    except KubeError as exc:
        if exc.status in answers:
            return False
        raise
    return True


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the owned fields turning `current` into `desired` (None deletes)."""
    patch: dict[str, Any] = {}
    for field in OWNED_FIELDS:
        if field in desired:
            if current.get(field) != desired[field]:
                patch[field] = desired[field]
        elif current.get(field) is not None:
            patch[field] = None
    return patch
