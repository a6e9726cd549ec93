"""The termination message: the result or the error as JSON, at most 4 KiB (Kubernetes' cap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_BYTES = 4096


def render(payload: dict[str, Any]) -> str:
    """`payload` as compact JSON of at most MAX_BYTES UTF-8 bytes.

    Only an error message can be long; it is shortened (with an ellipsis) until the whole fits.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) <= MAX_BYTES:
        return text
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message: str = error["message"]
        overflow = len(text.encode("utf-8")) - MAX_BYTES
        keep = max(0, len(message) - overflow - 8)
        while True:
            shortened = {**payload, "error": {**error, "message": message[:keep] + "…"}}
            text = json.dumps(shortened, separators=(",", ":"), ensure_ascii=False)
            if len(text.encode("utf-8")) <= MAX_BYTES or keep == 0:
                return text
            keep = max(0, keep - 64)
    raise ValueError("termination message too large")  # results are far below the cap


def write(path: Path, payload: dict[str, Any], *, explicit: bool) -> bool:
    """Write the message to `path`; returns whether it was written.

    Written when the file exists (Kubernetes creates /dev/termination-log) or the path was set
    explicitly; never fails the process.
    """
    if not explicit and not path.exists():
        return False
    try:
        path.write_text(render(payload), encoding="utf-8")
    except OSError:
        return False
    return True
