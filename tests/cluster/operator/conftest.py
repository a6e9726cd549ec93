"""Fixtures for the operator against the real API server: the CRD, the operator as a subprocess
(`exportjobs-operator`, exactly as deployed), a kubelet stand-in for processor pods, helpers."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from tests.local_cluster import LocalCluster

GROUP, VERSION, PLURAL = "exportjobs.dev", "v1alpha1", "exportjobs"
LABEL = "exportjobs.dev/export"
OPERATOR = Path(sys.executable).parent / "exportjobs-operator"

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Exports:
    """ExportJobs, Jobs and pods of one namespace, and a kubelet's hand on the pods."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = k8s.CustomObjectsApi(api)
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)

    # -- ExportJobs ------------------------------------------------------------------------------
    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        spec.setdefault("source", {"uri": f"s3://source-bucket/{name}.csv"})
        spec.setdefault("format", "csv")
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

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(self, name: str, phase: str, *, timeout: float = 30) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") == phase else None

        try:
            return wait_for(f"{name} to be {phase}", probe, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(self.status(name))}") from None

    # -- Jobs and pods ---------------------------------------------------------------------------
    def jobs(self) -> list[Any]:
        return list(self.batch.list_namespaced_job(self.namespace, label_selector=LABEL).items)

    def job(self, name: str) -> Any | None:
        try:
            return self.batch.read_namespaced_job(f"export-{name}", self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, name: str | None = None) -> list[Any]:
        selector = f"{LABEL}={name}" if name else LABEL
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def wait_pod(
        self, name: str, *, fresh: frozenset[str] | set[str] = frozenset(), timeout: float = 30
    ) -> Any:
        """A live, scheduled processor pod of ExportJob `name`, not among `fresh` (seen before)."""

        def probe() -> Any | None:
            for pod in self.pods(name):
                if (
                    pod.metadata.name not in fresh
                    and pod.metadata.deletion_timestamp is None
                    and pod.spec.node_name
                    and pod.status.phase == "Pending"
                ):
                    return pod
            return None

        return wait_for(f"a pod of {name}", probe, timeout=timeout)

    # -- the kubelet -----------------------------------------------------------------------------
    def run_pod(self, pod: Any) -> None:
        """Report the pod Running, as a kubelet would."""
        now = _now()
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            self.namespace,
            {
                "status": {
                    "phase": "Running",
                    "startTime": now,
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                    ],
                    "containerStatuses": [
                        {
                            "name": "processor",
                            "image": "exportjobs-processor:latest",
                            "imageID": "",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                    ],
                }
            },
        )

    def finish_pod(
        self, pod: Any, *, exit_code: int, message: str = "", reason: str | None = None
    ) -> None:
        """Report the container terminated with `exit_code` and a termination message."""
        now = _now()
        reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            self.namespace,
            {
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "conditions": [
                        {"type": t, "status": "False", "lastTransitionTime": now}
                        for t in ("Ready", "ContainersReady")
                    ],
                    "containerStatuses": [
                        {
                            "name": "processor",
                            "image": "exportjobs-processor:latest",
                            "imageID": "",
                            "ready": False,
                            "started": False,
                            "restartCount": 0,
                            "state": {
                                "terminated": {
                                    "exitCode": exit_code,
                                    "reason": reason
                                    or ("Completed" if exit_code == 0 else "Error"),
                                    "message": message,
                                    "startedAt": now,
                                    "finishedAt": now,
                                }
                            },
                        }
                    ],
                }
            },
        )

    def succeed(self, name: str, *, result: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the export's pod to success with a result message; returns the result."""
        result = result or {
            "uri": f"s3://out/reports/{name}/{name}.csv",
            "bytes": 123,
            "rows": 4,
            "sha256": "ab" * 32,
            "format": "csv",
            "bytesRead": 456,
            "durationSeconds": 0.5,
        }
        pod = self.wait_pod(name)
        self.run_pod(pod)
        self.finish_pod(pod, exit_code=0, message=json.dumps(result))
        return result


@pytest.fixture
def exports(kube_api: k8s.ApiClient, namespace: str, crd: str) -> Exports:
    return Exports(kube_api, namespace)


class OperatorProcess:
    """`exportjobs-operator` watching one namespace, as a subprocess with a log file."""

    def __init__(self, *, cluster: LocalCluster, namespace: str, log_dir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.env: dict[str, str] = {}

    def start(self, **settings: Any) -> OperatorProcess:
        """Start it; `settings` are EXPORTJOBS_OPERATOR_* names (lower case) → values."""
        if settings or not self.env:
            env = dict(os.environ)
            env.update(self.cluster.env)
            env.update(
                {
                    "EXPORTJOBS_NAMESPACE": self.namespace,
                    "EXPORTJOBS_OPERATOR_STANDALONE": "true",
                    "EXPORTJOBS_OPERATOR_SERVICE_ACCOUNT": "default",
                    "EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI": "s3://out/reports/",
                    "EXPORTJOBS_OPERATOR_METRICS_PORT": "0",
                    "EXPORTJOBS_OPERATOR_LIVENESS_PORT": "0",
                    "EXPORTJOBS_OPERATOR_HOUSEKEEPING_INTERVAL_SECONDS": "1",
                    "EXPORTJOBS_OPERATOR_QUEUE_STATUS_INTERVAL_SECONDS": "1",
                }
            )
            for key, value in settings.items():
                env[f"EXPORTJOBS_OPERATOR_{key.upper()}"] = str(value)
            self.env = env
        self.runs += 1
        log = (self.log_dir / f"operator-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(OPERATOR)], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )


@pytest.fixture
def operator(
    cluster: LocalCluster, namespace: str, crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator for the test's namespace (call `.start(**settings)`); stopped afterwards,
    its log printed when the test failed."""
    process = OperatorProcess(cluster=cluster, namespace=namespace, log_dir=tmp_path)
    try:
        yield process
    finally:
        process.stop()
        print(process.logs()[-20000:])
