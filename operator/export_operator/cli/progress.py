"""How a waiting export is shown: a redrawn bar on a terminal, one plain line per change else."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TextIO

FINAL = ("Succeeded", "Failed", "Cancelled")
BAR_WIDTH = 24


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def percent(export: Mapping[str, Any]) -> float | None:
    """The export's progress in [0, 100], or None when unknown."""
    progress = export.get("progress")
    if not isinstance(progress, Mapping):
        return None
    given = _number(progress.get("percent"))
    if given is None:
        done, total = _number(progress.get("bytesRead")), _number(progress.get("bytesTotal"))
        if done is None or not total or total <= 0:
            return None
        given = 100.0 * done / total
    return min(100.0, max(0.0, given))


def describe(export: Mapping[str, Any]) -> str:
    """One line: phase, percent, rows, and what went wrong or where the result is."""
    phase = str(export.get("status") or "?")
    parts = [f"{phase:<10}"]
    share = percent(export)
    if share is not None:
        parts.append(f"{share:5.1f}%")
    progress = export.get("progress")
    rows = _number(progress.get("rows")) if isinstance(progress, Mapping) else None
    if rows is not None:
        parts.append(f"rows {int(rows):,}")
    position = _number(export.get("queue_position"))
    if phase == "Queued" and position is not None:
        parts.append(f"queue position {int(position)}")
    error = export.get("error")
    if isinstance(error, Mapping):
        parts.append(f"{error.get('code', '')}: {error.get('message', '')}")
    result = export.get("result")
    if phase == "Succeeded" and isinstance(result, Mapping) and result.get("uri"):
        parts.append(str(result["uri"]))
    return "".join(c if c.isprintable() else " " for c in "  ".join(parts))


def bar(export: Mapping[str, Any], width: int = BAR_WIDTH) -> str:
    """`[#######.........]` for the export's percent (empty while unknown)."""
    share = percent(export)
    filled = 0 if share is None else round(width * share / 100.0)
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Display:
    """Shows each state a waiting export passes through on `out`."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.last = ""

    def show(self, export: Mapping[str, Any]) -> None:
        line = describe(export)
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write(f"\r\x1b[2K{bar(export)} {line}")
            if export.get("status") in FINAL:
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()
