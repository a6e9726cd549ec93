"""hack/tools.sh is safe to run twice at once and after a killed run (helm: the quickest build)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.cluster import REPO

TOOLS = REPO / "hack" / "tools.sh"


def _start(tools_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "EXPORTJOBS_TOOLS_DIR": str(tools_dir)}
    return subprocess.Popen(
        [str(TOOLS), "helm"], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def test_two_runs_at_once_build_once(tmp_path: Path) -> None:
    runs = [_start(tmp_path), _start(tmp_path)]
    outputs = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum(out.count("building helm") for out in outputs) == 1
    helm = next(tmp_path.glob("helm-*/bin/helm"))
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.startswith("v3.")


def test_a_killed_build_leaves_nothing_and_the_next_run_succeeds(tmp_path: Path) -> None:
    run = _start(tmp_path)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".build-helm-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    assert not list(tmp_path.glob("helm-*/.complete"))
    again = _start(tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert list(tmp_path.glob("helm-*/.complete"))
    assert not list(tmp_path.glob(".build-helm-*"))
