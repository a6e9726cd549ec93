"""The real node starts its kubelet only once containerd's CRI service answers.

A clean-clone CI run failed in test_cluster_cycles: containerd answered `ctr version`, the kubelet
started, asked the CRI service ("server is not initialized yet") and exited, and the node was
never Ready. hack/node.sh's functions are sourced here with containerd, ctr and crictl replaced.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

NODE = Path(__file__).resolve().parents[3] / "hack" / "node.sh"


def _start_containerd(tmp_path: Path, crictl_refusals: int, timeout: int) -> tuple[int, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "containerd").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "ctr").write_text("#!/bin/sh\necho version\n")
    for stub in ("containerd", "ctr"):
        (bin_dir / stub).chmod(0o755)
    calls = tmp_path / "crictl-calls"
    script = f"""
        source {NODE}
        node_dir={tmp_path}; timeout={timeout}
        write_containerd_config() {{ :; }}
        crictl_() {{
          echo x >>{calls}
          [ "$(wc -l <{calls})" -gt {crictl_refusals} ] || {{
            echo "server is not initialized yet" >&2; return 1; }}
        }}
        start_containerd && echo started
        """
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, check=False
        )
    finally:
        pid_file = tmp_path / "containerd.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
    count = len(calls.read_text().splitlines()) if calls.exists() else 0
    assert "started" in result.stdout or result.returncode != 0, result.stderr
    return count, result.stdout + result.stderr


def test_start_waits_until_the_cri_service_answers(tmp_path: Path) -> None:
    count, output = _start_containerd(tmp_path, crictl_refusals=2, timeout=10)
    assert "started" in output, output
    assert count == 3  # refused twice, then answered: only then does start_containerd return


def test_a_cri_service_that_never_answers_fails_within_the_bound(tmp_path: Path) -> None:
    started = time.monotonic()
    count, output = _start_containerd(tmp_path, crictl_refusals=10**6, timeout=1)
    assert "started" not in output
    assert "CRI service was not ready within 1s" in output
    assert count >= 2
    assert time.monotonic() - started < 10
