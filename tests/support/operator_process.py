"""The operator against the real API server: exportjobs-operator as a subprocess, a kubelet
stand-in for processor pods, watchers of Jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import watch

from tests.support import pod_status
from tests.support.cluster import LocalCluster
from tests.support.exportjobs import ExportJobs
from tests.support.processes import stop_process
from tests.support.wait import wait_for

LABEL = "exportjobs.dev/export"
OPERATOR = Path(sys.executable).parent / "exportjobs-operator"
T = TypeVar("T")


class Exports(ExportJobs):
    """ExportJobs, Jobs and pods of one namespace, and a kubelet's hand on the pods."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        super().__init__(api, namespace)
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)

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

    # -- the kubelet (the status patches: pod_status.py) -----------------------------------------
    def _report(self, pod: Any, patch: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, patch)

    def run_pod(self, pod: Any) -> None:
        """Report the pod Running, as a kubelet would."""
        self._report(pod, pod_status.running())

    def finish_pod(
        self, pod: Any, *, exit_code: int, message: str = "", reason: str | None = None
    ) -> None:
        """Report the container terminated with `exit_code` and a termination message."""
        self._report(
            pod, pod_status.terminated(exit_code=exit_code, message=message, reason=reason)
        )

    def stall_pod(self, pod: Any, *, reason: str, message: str) -> None:
        """Report the container waiting with `reason`: a kubelet that cannot start it."""
        self._report(pod, pod_status.waiting(reason=reason, message=message))

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


def create_many(exports: Exports, names: list[str], *, workers: int = 8) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda n: exports.create(n), names))


def _finished(job: Any) -> bool:
    return any(
        c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or []
    )


class _WatchThread(threading.Thread):
    """A thread that follows a watch (`_follow`) until stopped, watching again whenever the
    server ends the stream; an exception ends it and is kept in `error` for the test."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.error: BaseException | None = None
        self._stream = watch.Watch()
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    self._follow()
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError):
                    continue  # the server ended the stream: watch again
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _follow(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        self._stream.stop()
        self.join(timeout=10)


class Kubelet(_WatchThread):
    """Plays the kubelet from one pod watch: each bound, unstarted processor pod is reported
    Running, then Succeeded with a result message."""

    def __init__(self, exports: Exports, *, skip: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.exports = exports
        self.skip = skip
        self.done: set[str] = set()

    def _follow(self) -> None:
        for event in self._stream.stream(
            self.exports.core.list_namespaced_pod,
            self.exports.namespace,
            label_selector="exportjobs.dev/export",
            timeout_seconds=5,
        ):
            pod = event["object"]
            name = pod.metadata.labels["exportjobs.dev/export"]
            if (
                event["type"] == "DELETED"
                or name in self.done
                or name in self.skip
                or not pod.spec.node_name
                or pod.status.phase != "Pending"
                or pod.metadata.deletion_timestamp is not None
            ):
                continue
            self.exports.run_pod(pod)
            result = {
                "uri": f"s3://out/reports/{name}.csv",
                "bytes": 1,
                "rows": 1,
                "sha256": "ef" * 32,
                "format": "csv",
            }
            self.exports.finish_pod(pod, exit_code=0, message=json.dumps(result))
            self.done.add(name)


class JobWatcher(_WatchThread):
    """Follows every Job change; records the most unfinished Jobs at once and admission order."""

    def __init__(self, exports: Exports) -> None:
        super().__init__()
        self.exports = exports
        self.unfinished: set[str] = set()
        self.most_running = 0
        self.admitted_order: list[str] = []
        self._version = ""

    def _follow(self) -> None:
        # Resume from the last version seen: a re-list would report Jobs in name order.
        extra = {"resource_version": self._version} if self._version else {}
        for event in self._stream.stream(
            self.exports.batch.list_namespaced_job,
            self.exports.namespace,
            label_selector="exportjobs.dev/export",
            timeout_seconds=5,
            **extra,
        ):
            self._version = event["object"].metadata.resource_version
            job = event["object"]
            name = job.metadata.labels["exportjobs.dev/export"]
            if name not in self.admitted_order:
                self.admitted_order.append(name)
            if event["type"] == "DELETED" or _finished(job):
                self.unfinished.discard(name)
            else:
                self.unfinished.add(name)
            self.most_running = max(self.most_running, len(self.unfinished))


class OperatorProcess:
    """`exportjobs-operator` watching one namespace, as a subprocess with a log file."""

    def __init__(
        self, *, cluster: LocalCluster, namespace: str, log_dir: Path, name: str = "operator"
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.name = name
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
                    "EXPORTJOBS_OPERATOR_QUEUE_STATUS_INTERVAL_SECONDS": "1",
                }
            )
            for key, value in settings.items():
                env[f"EXPORTJOBS_OPERATOR_{key.upper()}"] = str(value)
            self.env = env
        self.runs += 1
        log = (self.log_dir / f"{self.name}-{self.runs}.log").open("wb")
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
        if self.proc is not None:
            stop_process(self.proc, grace_seconds=15)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )
