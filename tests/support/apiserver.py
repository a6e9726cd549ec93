"""The local cluster's kube-apiserver stopped and started again with the same command line (the
API server outages of the cluster tier), and the control-plane components it takes down with it."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.support.cluster import LocalCluster
from tests.support.wait import wait_for


@dataclasses.dataclass(frozen=True)
class _Process:
    """How to start a process again: its command line, environment and working directory."""

    pid: int
    argv: list[str]
    environ: dict[str, str]
    cwd: str

    @classmethod
    def read(cls, pid: int) -> _Process:
        proc = Path(f"/proc/{pid}")
        return cls(
            pid=pid,
            argv=[a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a],
            environ=dict(
                item.decode().split("=", 1)
                for item in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in item
            ),
            cwd=os.readlink(proc / "cwd"),
        )

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name

    def alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text(errors="replace")
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited

    def relaunch(self, log: Path) -> None:
        """Start it again, detached (`setsid --fork`: no child of the tests is left behind)."""
        with log.open("ab") as out:
            launcher = subprocess.Popen(
                ["setsid", "--fork", *self.argv],
                cwd=self.cwd,
                env=self.environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            launcher.wait(timeout=30)


def _processes() -> Iterator[tuple[int, list[bytes]]]:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            yield int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue


class ApiServer:
    """The local cluster's kube-apiserver (kwokctl --runtime binary), stopped and started again
    with the same command line. Components that exit while it is down (kube-controller-manager
    and kube-scheduler end when they cannot renew their leader lease) are started again too, so
    the rest of the session keeps a working cluster."""

    COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(self, cluster: LocalCluster, log_dir: Path) -> None:
        kubeconfig = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        server = str(kubeconfig["clusters"][0]["cluster"]["server"])
        self.port = int(server.rsplit(":", 1)[1].split("/")[0])
        self.log_dir = log_dir
        self.apiserver = _Process.read(self._find_apiserver())
        # The cluster's own folder (kwokctl's workdir) appears in its components' arguments.
        marker = next(a for a in self.apiserver.argv if "/clusters/" in a)
        root = marker[marker.index("/") : marker.index("/clusters/")]
        name = marker[len(root) + len("/clusters/") :].split("/")[0]
        folder = f"{root}/clusters/{name}/".encode()
        self.components = [
            _Process.read(pid)
            for pid, args in _processes()
            if args
            and Path(args[0].decode(errors="replace")).name in self.COMPONENTS
            and any(folder in a for a in args)
        ]

    def _find_apiserver(self) -> int:
        for pid, args in _processes():
            if (
                args
                and args[0].endswith(b"kube-apiserver")
                and f"--secure-port={self.port}".encode() in args
            ):
                return pid
        raise AssertionError(f"no kube-apiserver process serves port {self.port}")

    def stop(self) -> None:
        """SIGTERM (it drains for a while: SIGKILL after 5 s); returns once it has exited."""
        os.kill(self.apiserver.pid, signal.SIGTERM)
        if not _wait_exit(self.apiserver, within=5):
            os.kill(self.apiserver.pid, signal.SIGKILL)
            assert _wait_exit(self.apiserver, within=30), "kube-apiserver did not stop"

    def start(self) -> None:
        """Start kube-apiserver again and find its new pid."""
        self.apiserver.relaunch(self.log_dir / "kube-apiserver-restarted.log")

        def found() -> int | None:
            try:
                return self._find_apiserver()
            except AssertionError:
                return None

        self.apiserver = _Process.read(wait_for("the new kube-apiserver", found, timeout=30))

    def revive_components(self, *, watch_for: float = 20) -> list[str]:
        """For `watch_for` seconds, start again any component that exited; their names."""
        revived: list[str] = []
        deadline = time.monotonic() + watch_for
        while time.monotonic() < deadline:
            for i, component in enumerate(self.components):
                if not component.alive():
                    component.relaunch(self.log_dir / f"{component.name}-restarted.log")
                    time.sleep(1)
                    match = [
                        pid
                        for pid, args in _processes()
                        if args
                        and [a.decode(errors="replace") for a in args if a] == component.argv
                    ]
                    if match:
                        self.components[i] = _Process.read(max(match))
                    revived.append(component.name)
            time.sleep(0.5)
        return revived


def _wait_exit(process: _Process, *, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not process.alive():
            return True
        time.sleep(0.1)
    return False
