"""hack/cluster.sh: clear failure on a busy port, recovery from a stale cluster, clean stop."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.support.cluster import CLUSTER_SCRIPT, read_env_file


def _run(local_dir: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "EXPORTJOBS_LOCAL_DIR": str(local_dir),
        "EXPORTJOBS_CLUSTER_NAME": "exportjobs-script-test",
        **env,
    }
    return subprocess.run(
        [str(CLUSTER_SCRIPT), command], env=full_env, capture_output=True, text=True, timeout=180
    )


def _processes_under(path: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_port_in_use_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(tmp_path, "up", EXPORTJOBS_APISERVER_PORT=str(port))
    assert result.returncode != 0
    assert f"port {port} for the kube-apiserver (EXPORTJOBS_APISERVER_PORT) is already in use" in (
        result.stderr
    )
    assert _processes_under(tmp_path) == []
    assert not (tmp_path / "cluster.env").exists()


def test_stale_cluster_is_replaced_and_down_leaves_nothing(tmp_path: Path) -> None:
    first = _run(tmp_path, "up")
    assert first.returncode == 0, first.stderr
    try:
        stale_env = read_env_file(tmp_path / "cluster.env")
        # A killed run: the cluster stays up and nobody ran `down`. `up` must recover by itself.
        second = _run(tmp_path, "up")
        assert second.returncode == 0, second.stderr
        assert "removing a stale cluster 'exportjobs-script-test'" in second.stderr
        fresh_env = read_env_file(tmp_path / "cluster.env")
        assert fresh_env["AWS_ACCESS_KEY_ID"] != stale_env["AWS_ACCESS_KEY_ID"]
        kubectl = subprocess.run(
            ["kubectl", "get", "--raw", "/readyz"],
            env={**os.environ, **fresh_env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert kubectl.stdout.strip() == "ok"
    finally:
        down = _run(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert _processes_under(tmp_path) == []
    assert not (tmp_path / "cluster.env").exists()
