"""Progress reports: JSON merge patches of `status.progress` on the ExportJob, best effort.

Plain HTTPS with urllib3 (botocore brings it), so the processor image needs no Kubernetes client.
A failed patch is logged once and never fails the export.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import urllib3

from export_processor.settings import KubeSettings
from export_processor.source import ByteSource

GROUP_VERSION = "exportjobs.dev/v1alpha1"
PLURAL = "exportjobs"


@dataclass
class ProgressState:
    """Counters the progress reporter samples from another thread."""

    bytes_total: int | None = None
    rows: int = 0
    source: ByteSource | None = None

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_fetched if self.source is not None else 0


def progress_body(*, bytes_read: int, bytes_total: int | None, rows: int) -> dict[str, object]:
    """The merge patch body; `percent` only when the total is known."""
    progress: dict[str, object] = {"bytesRead": bytes_read, "rows": rows}
    if bytes_total is not None:
        progress["bytesTotal"] = bytes_total
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
        self._warned = False
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

    def stop(self, *, final: bool) -> None:
        """Stop the thread; with `final`, send one last patch (e.g. 100 % at the end)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._settings.request_timeout_seconds + 1)
        if final:
            self.patch_once()

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
            if response.status >= 300:
                self._warn(f"HTTP {response.status}: {response.data[:200]!r}")
                return False
        except Exception as exc:
            self._warn(f"{type(exc).__name__}: {exc}")
            return False
        self.patches_sent += 1
        return True

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            print(
                f"exportjobs-processor: progress patch failed (ignored): {reason}", file=sys.stderr
            )
