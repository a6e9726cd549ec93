"""The S3 fault injector of the cluster tier: Toxiproxy (TCP: bandwidth) in front of the HTTP
fault proxy (hack/s3_faults.py: S3 error answers per operation, bodies cut, latency) in front of
the real S3 server, and a private MinIO that a test may kill and start again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cluster import REPO
from tests.support.net import free_port
from tests.support.processes import stop_process
from tests.support.wait import wait_for

TOOLS = REPO / "hack" / "tools.sh"


def _wait_for(check: Any, what: str, timeout: float = 30) -> None:
    def probe() -> bool:
        try:
            return bool(check())
        except OSError:  # not listening yet
            return False

    wait_for(what, probe, timeout=timeout, interval=0.1)


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # Toxiproxy's /version is plain text
        return raw.decode()


@dataclass
class FaultProxy:
    """hack/s3_faults.py, running: `url` to point S3 clients at."""

    url: str

    def set(self, *rules: dict[str, Any]) -> None:
        """Replace the rules (and reset the counters)."""
        _http("PUT", f"{self.url}/__faults__", list(rules))

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = _http("GET", f"{self.url}/__faults__")
        return result


@contextmanager
def fault_proxy(upstream: str, tmp: Path) -> Iterator[FaultProxy]:
    port_file = tmp / "s3_faults.port"
    log = (tmp / "s3_faults.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "hack" / "s3_faults.py"),
            "--upstream",
            upstream,
            "--port-file",
            str(port_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(port_file.exists, "the S3 fault proxy")
        yield FaultProxy(f"http://127.0.0.1:{port_file.read_text()}")
    finally:
        stop_process(proc)
        log.close()


@dataclass
class Toxiproxy:
    """A Toxiproxy server: `proxy(name, upstream)` opens a listener, `toxic(...)` adds a fault."""

    api: str

    def proxy(self, name: str, upstream: str, host: str = "127.0.0.1") -> str:
        """A new proxy to `upstream` (host:port) listening on `host`; its address (host:port)."""
        listen = f"{host}:{free_port()}"
        _http("POST", f"{self.api}/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return listen

    def toxic(self, proxy: str, kind: str, stream: str, **attributes: int) -> str:
        name = f"{kind}_{stream}"
        _http(
            "POST",
            f"{self.api}/proxies/{proxy}/toxics",
            {"name": name, "type": kind, "stream": stream, "attributes": attributes},
        )
        return name

    def remove_toxic(self, proxy: str, name: str) -> None:
        _http("DELETE", f"{self.api}/proxies/{proxy}/toxics/{name}")


def tool_bin(tool: str) -> Path:
    """The bin folder of a tool hack/tools.sh builds (built now if missing: ~90 s cold)."""
    subprocess.run([str(TOOLS), tool], check=True)
    paths = subprocess.run([str(TOOLS), "path"], capture_output=True, text=True, check=True)
    return next(Path(p) for p in paths.stdout.split() if f"/{tool}-" in p)


@contextmanager
def toxiproxy(tmp: Path) -> Iterator[Toxiproxy]:
    binary = tool_bin("toxiproxy") / "toxiproxy-server"
    port = free_port()
    log = (tmp / "toxiproxy.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "-host", "127.0.0.1", "-port", str(port)], stdout=log, stderr=log
    )
    api = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _http("GET", f"{api}/version") is not None, "toxiproxy")
        yield Toxiproxy(api)
    finally:
        stop_process(proc)
        log.close()


@dataclass
class MinIO:
    """A private MinIO server (its own port and data folder) that can be killed and restarted."""

    data: Path
    port: int
    user: str
    password: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.user,
            "MINIO_ROOT_PASSWORD": self.password,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "minio",
                    "server",
                    "--quiet",
                    "--address",
                    self.address,
                    "--console-address",
                    f"127.0.0.1:{free_port()}",
                    str(self.data),
                ],
                env=env,
                stdout=log,
                stderr=log,
            )

        def ready() -> bool:
            url = f"http://{self.address}/minio/health/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        _wait_for(ready, "MinIO", timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextmanager
def private_minio(tmp: Path) -> Iterator[MinIO]:
    server = MinIO(
        data=tmp / "minio-data",
        port=free_port(),
        user="faults-admin",
        password="faults-secret-key",
        log=tmp / "minio.log",
    )
    server.data.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
