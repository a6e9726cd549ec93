"""Stopping the processes tests start: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace_seconds: float = 10) -> None:
    """Terminate `proc` if it still runs; kill it if it has not exited after `grace_seconds`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
