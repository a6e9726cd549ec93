"""What a kubelet reports for a processor pod, as pod status patches: written once for the
cluster tests' kubelet stand-in (operator_process.py: `Exports.run_pod`, `finish_pod`,
`stall_pod`) and for bench/bench_operator.py, which plays the kubelet too."""

from __future__ import annotations

import datetime as dt
from typing import Any


def now() -> str:
    """The current time as the API server writes timestamps."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _processor(
    state: dict[str, Any], *, ready: bool = False, started: bool = False
) -> dict[str, Any]:
    """The status of the pod's one container, `processor`, in `state`."""
    return {
        "name": "processor",
        "image": "exportjobs-processor:latest",
        "imageID": "",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    }


def running() -> dict[str, Any]:
    """The pod started and its container running."""
    at = now()
    return {
        "status": {
            "phase": "Running",
            "startTime": at,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": at}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                _processor({"running": {"startedAt": at}}, ready=True, started=True)
            ],
        }
    }


def terminated(*, exit_code: int, message: str = "", reason: str | None = None) -> dict[str, Any]:
    """The container ended with `exit_code` and a termination `message` (the processor's result
    or error); `reason` defaults to the kubelet's `Completed` / `Error`."""
    at = now()
    return {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                {"type": t, "status": "False", "lastTransitionTime": at}
                for t in ("Ready", "ContainersReady")
            ],
            "containerStatuses": [
                _processor(
                    {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                            "message": message,
                            "startedAt": at,
                            "finishedAt": at,
                        }
                    }
                )
            ],
        }
    }


def waiting(*, reason: str, message: str) -> dict[str, Any]:
    """The container not started and waiting, e.g. `ImagePullBackOff`, `CreateContainerError`."""
    return {
        "status": {
            "containerStatuses": [_processor({"waiting": {"reason": reason, "message": message}})]
        }
    }
