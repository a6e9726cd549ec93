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

        def shortened(keep: int) -> str:
            cut = {**payload, "error": {**error, "message": message[:keep] + "…"}}
            return json.dumps(cut, separators=(",", ":"), ensure_ascii=False)

        # The longest prefix (in characters) whose JSON fits in MAX_BYTES (in UTF-8 bytes).
        low, high = 0, len(message)
        while low < high:
            middle = (low + high + 1) // 2
            if len(shortened(middle).encode("utf-8")) <= MAX_BYTES:
                low = middle
            else:
                high = middle - 1
        return shortened(low)
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
