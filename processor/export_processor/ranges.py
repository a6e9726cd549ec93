"""One byte range of a split export: where it starts, where it ends, and what it reports.

A split export (docs/processor.md, "Splitting") converts the source in `count` ranges. Range i
covers the rows from a row boundary at or after its offset to one at or after the next range's
offset, where

- the offsets divide the data (the bytes after the header row) evenly: `offsets()`;
- a row boundary is a position right after a line end (`\\n`, or a `\\r` not followed by `\\n`)
  outside quotes;
- the start is guessed from the bytes alone (range_bounds.guess_start: the first line end after
  the offset after which rows fit, which a quoted value with line ends can fool), unless a
  verified one is given;
- the end is the next range's guessed start (the same guess), or, for a range redone from a
  verified start (`RangeSpec.parity_end`), found by its own reading (range_bounds.RangeSource):
  the first line end at or after the next offset where the quotes read since the start are
  even. Either is confirmed by the parser (the end marker after it comes out as a row of its
  own, parser_input.py, or the range fails).

A range started at a verified boundary that succeeds therefore ends at a boundary the
single-pod parse sees there. The finishing step (split.py) accepts the ranges only when every
reported end equals the next range's start, and redoes the others from the verified boundary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from export_processor.column_types import (
    BOOL,
    DATE,
    FLOAT,
    INT,
    TEXT,
    TIMESTAMP,
    TIMESTAMP_UTC,
)

KIND_NAMES: dict[str, pa.DataType] = {
    "text": TEXT,
    "int64": INT,
    "float64": FLOAT,
    "bool": BOOL,
    "date32": DATE,
    "timestamp": TIMESTAMP,
    "timestamp_utc": TIMESTAMP_UTC,
}


def kind_name(kind: pa.DataType) -> str:
    for name, known in KIND_NAMES.items():
        if known == kind:
            return name
    raise ValueError(f"not a column kind: {kind}")


def kind_of(name: str) -> pa.DataType:
    try:
        return KIND_NAMES[name]
    except KeyError:
        raise ValueError(f"not a column kind: {name!r}") from None


@dataclass(frozen=True)
class RangePlan:
    """What every range is given, read once from the head of the source: the column names, where
    the data starts (after the header row), the column kinds the single-pod export infers from
    its first parser block (the lossless rule starts from these in every range), the source's
    size and version (SourcePin.identity, "" for a file: a range that read another version
    reports another digest)."""

    names: list[str]
    data_start: int
    kinds: list[str]
    size: int
    source: str = ""

    @property
    def digest(self) -> str:
        """The same plan gives the same digest: ranges that each read the head agree on it."""
        body = json.dumps([self.names, self.data_start, self.kinds, self.size, self.source])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RangeSpec:
    """Which range to convert, and what the finishing step fixed for it (a redo)."""

    index: int
    count: int
    start: int | None = None
    """A verified start (a redo); None: guessed from the offset."""
    kinds: list[str] | None = None
    """Kinds the range must be written with (a redo after the kinds were merged); None: the
    plan's, widened by the lossless rule as in one pod."""
    plan: RangePlan | None = None
    """The plan read once; None: the range reads the head itself (the same bytes give the same
    plan, checked by its digest)."""
    cuts: tuple[int, ...] | None = None
    """The `count - 1` offsets between the ranges; None: the data divided evenly."""
    upload_id: str | None = None
    """The export's multipart upload opened before the ranges (`--prepare-ranges`): the range
    uploads its parts into it (range_sink.py); None: into a part object of its own."""
    end: int | None = None
    """Where the range ends, when known (a redo of an accepted range with other kinds)."""
    parity_end: bool = False
    """Find the end by the quotes' parity (a redo from a verified start), instead of taking
    the next range's guessed start as it (which a quoted value holding lines that look like
    rows can fool: the range's parse then fails, and the finishing step redoes it so)."""

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"range index {self.index} is not in 0..{self.count - 1}")

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def offsets(plan: RangePlan, count: int, cuts: tuple[int, ...] | None = None) -> list[int]:
    """The `count + 1` offsets dividing the data: the first is the data start, the last the
    source's end; between them `cuts` (kept within the data, in order) or even shares."""
    start, size = plan.data_start, plan.size
    if cuts is None:
        inner = [start + (size - start) * i // count for i in range(1, count)]
    else:
        if len(cuts) != count - 1:
            raise ValueError(f"{count} ranges need {count - 1} cuts, not {len(cuts)}")
        inner = sorted(min(max(cut, start), size) for cut in cuts)
    return [start, *inner, size]


@dataclass
class RangeReport:
    """What a range reports in its result JSON (`range`), and the finishing step reads."""

    index: int
    count: int
    start: int
    guessed: bool
    plan: str
    """The plan's digest."""
    end: int | None = None
    kinds: list[str] = field(default_factory=list)
    int_bounds: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per int64 column (by index), the least and greatest integer read while it was int64."""
    upload: dict[str, int] | None = None
    """Its share of the export's upload (range_sink.RangePartsSink.uploaded), if it wrote there."""

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "count": self.count,
            "start": self.start,
            "guessed": self.guessed,
            "plan": self.plan,
            "end": self.end,
            "kinds": self.kinds,
            "intBounds": {str(i): list(b) for i, b in self.int_bounds.items()},
        } | ({"upload": self.upload} if self.upload is not None else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeReport:
        end = data.get("end")
        return cls(
            index=int(data["index"]),
            count=int(data["count"]),
            start=int(data["start"]),
            guessed=bool(data["guessed"]),
            plan=str(data["plan"]),
            end=None if end is None else int(end),
            kinds=[str(k) for k in data.get("kinds", [])],
            int_bounds={
                int(i): (int(b[0]), int(b[1])) for i, b in (data.get("intBounds") or {}).items()
            },
            upload={str(k): int(v) for k, v in data["upload"].items()}
            if isinstance(data.get("upload"), dict)
            else None,
        )
