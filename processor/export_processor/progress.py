"""Progress reports: JSON merge patches of `status.progress` on the ExportJob, best effort.

Plain HTTPS with urllib3 (botocore brings it), so the processor image needs no Kubernetes client.
A failed patch never fails the export. Every patch carries the progress of the moment it is sent,
so the first one the API server takes after an outage brings the status up to date; the last one
(100 %) is tried again until the API server takes it, within `KubeSettings.final_wait_seconds`,
when it took one before: the status contract gives `progress` to the processor alone, so a final
patch lost here is never written by anyone.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import urllib3

from export_processor.settings import KubeSettings
from export_processor.source import ByteSource

GROUP_VERSION = "exportjobs.dev/v1alpha1"
PLURAL = "exportjobs"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between the tries of the final patch (the last one repeats)."""


@dataclass
class ProgressState:
    """Counters the progress reporter samples from another thread."""

    bytes_total: int | None = None
    rows: int = 0
    source: ByteSource | None = None

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_fetched if self.source is not None else 0


def progress_body(
    *, bytes_read: int, bytes_total: int | None, rows: int, range_index: int | None = None
) -> dict[str, object]:
    """The merge patch body; `percent` only when the total is known. A split export's range
    patches its own entry, `progress.ranges.<index>` (the operator adds them up)."""
    progress: dict[str, object] = {"bytesRead": bytes_read, "rows": rows}
    if bytes_total is not None:
        progress["bytesTotal"] = bytes_total
    if range_index is not None:
        return {"status": {"progress": {"ranges": {str(range_index): progress}}}}
    if bytes_total is not None:
        progress["percent"] = (
            100 if bytes_total == 0 else min(100, int(bytes_read * 100 // bytes_total))
        )
    return {"status": {"progress": progress}}


class ProgressReporter:
    """Patches progress every `interval` seconds from a daemon thread while the export runs."""

    def __init__(
        self,
        *,
        settings: KubeSettings,
        namespace: str,
        name: str,
        sample: Callable[[], dict[str, object]],
    ) -> None:
        assert settings.api_url is not None
        self._settings = settings
        self._url = (
            f"{settings.api_url}/apis/{GROUP_VERSION}/namespaces/{quote(namespace)}/"
            f"{PLURAL}/{quote(name)}/status"
        )
        self._sample = sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._failed = 0
        """Patches failed since the last one sent (one line on stderr per such streak)."""
        self._reason = ""
        """Why the last patch failed."""
        self.patches_sent = 0
        self._http = self._pool()

    def _pool(self) -> urllib3.PoolManager:
        timeout = urllib3.Timeout(total=self._settings.request_timeout_seconds)
        retries = urllib3.Retry(total=0)
        if self._settings.insecure_skip_tls_verify:
            return urllib3.PoolManager(
                cert_reqs=ssl.CERT_NONE, assert_hostname=False, timeout=timeout, retries=retries
            )
        ca = self._settings.ca_file
        if ca is not None and ca.exists():
            return urllib3.PoolManager(ca_certs=str(ca), timeout=timeout, retries=retries)
        return urllib3.PoolManager(timeout=timeout, retries=retries)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, final: bool, interrupt: threading.Event | None = None) -> None:
        """Stop the thread; with `final`, send one last patch (e.g. 100 % at the end), tried
        again within `final_wait_seconds` unless `interrupt` is set (a signal: the pod is being
        stopped)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._settings.request_timeout_seconds + 1)
        if final:
            self._send_final(interrupt or threading.Event())

    def _send_final(self, interrupt: threading.Event) -> None:
        """Only when the API server took a patch of this process before: then a failure is the
        server's state (down, restarting: a kube-apiserver that has just started answers 401,
        403 or 404 until its caches are filled), not a request it can never take. A pod that
        never got a patch through (a network policy, a wrong address, no RBAC) is not held up."""
        deadline = time.monotonic() + self._settings.final_wait_seconds
        tries = 1
        while not self.patch_once() and self.patches_sent:
            left = deadline - time.monotonic()
            if not left > 0:  # (not: a NaN setting ends it too)
                self._note(f"final progress not sent after {tries} tries: {self._reason}")
                return
            if interrupt.wait(min(RETRY_DELAYS[min(tries - 1, len(RETRY_DELAYS) - 1)], left)):
                self._note("final progress not sent: stopped by a signal")
                return
            tries += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._settings.progress_interval_seconds):
            self.patch_once()

    def patch_once(self) -> bool:
        """Send one patch now; returns whether the API server accepted it. Never raises."""
        try:
            token = self._settings.token_file.read_text().strip()
            body = json.dumps(self._sample()).encode()
            response = self._http.request(
                "PATCH",
                self._url,
                body=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                },
            )
        except Exception as exc:
            self._failure(f"{type(exc).__name__}: {exc}")
            return False
        if response.status >= 300:
            self._failure(f"HTTP {response.status}: {response.data[:200]!r}")
            return False
        if self._failed:
            self._note(
                f"progress patches sent again after {self._failed} failed (the last: "
                f"{self._reason})"
            )
            self._failed = 0
        self.patches_sent += 1
        return True

    def _failure(self, reason: str) -> None:
        self._reason = reason[:300]
        if not self._failed:
            self._note(f"progress patch failed (ignored): {reason}")
        self._failed += 1

    @staticmethod
    def _note(line: str) -> None:
        print(f"exportjobs-processor: {line}", file=sys.stderr, flush=True)
