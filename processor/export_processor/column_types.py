"""The column typing policy: which Arrow type each CSV column is read as.

Text formats (csv, csv.gz) read every column as text, so values pass through unchanged. Typed
formats (jsonl, parquet) infer from the first parser block, conservatively, and fix the schema
before any output is written; a later value that does not fit widens the column (int -> float ->
text) and the export restarts from the beginning with the wider type (see docs/processor.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as _compute

pc: Any = _compute  # stubs narrower than the kernels

_CONVERSION_ERROR = re.compile(
    r"In CSV column #(?P<index>\d+): (?:Row #\d+: )?CSV conversion error to (?P<type>[^:]+): "
    r"invalid value '(?P<value>.*)'",
    re.DOTALL,
)
_LEADING_ZERO = r"^[+-]?0[0-9]"
_LONG_INTEGER = r"^[+-]?[0-9]{16,}$"
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$", re.I)

TEXT_FORMATS = ("csv", "csv.gz")


@dataclass
class ColumnPlan:
    """Names and types of the columns, as the converter reads them."""

    names: list[str]
    types: list[pa.DataType]
    widened: list[str] = field(default_factory=list)
    """Human-readable notes of columns widened after a later value did not fit."""

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(zip(self.names, self.types, strict=True)))

    def column_types(self) -> dict[str, pa.DataType]:
        return dict(zip(self.names, self.types, strict=True))


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique (`a`, `a_2`, ...) and non-empty (`f3` for the fourth)."""
    seen: set[str] = set()
    result = []
    for index, name in enumerate(names):
        candidate = name or f"f{index}"
        base, suffix = candidate, 2
        while candidate in seen:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        seen.add(candidate)
        result.append(candidate)
    return result


def _keeps_text(strings: Any, pattern: str) -> bool:
    return bool(pc.any(pc.match_substring_regex(strings, pattern)).as_py())


def choose_types(
    *, inferred: pa.Schema, sample: pa.Table, export_format: str, mode: str
) -> list[pa.DataType]:
    """The type of each column, from Arrow's inference on the first block.

    Args:
        inferred: the schema Arrow inferred from the first block.
        sample: the same block read with every column as text (for the checks below).
        export_format: the output format.
        mode: `auto` or `string` (EXPORTJOBS_COLUMN_TYPES).
    """
    if mode == "string" or export_format in TEXT_FORMATS:
        return [pa.string()] * len(inferred)
    types: list[pa.DataType] = []
    for index, kind in enumerate(inferred.types):
        text = sample.column(index)
        chosen: pa.DataType = pa.string()
        if pa.types.is_int64(kind) or pa.types.is_float64(kind):
            # Zip codes and ids: "007" must not become 7; 20-digit ids must not lose digits.
            if not _keeps_text(text, _LEADING_ZERO) and not _keeps_text(text, _LONG_INTEGER):
                chosen = kind
        elif pa.types.is_boolean(kind) or (
            export_format == "parquet" and (pa.types.is_date32(kind) or pa.types.is_timestamp(kind))
        ):
            chosen = kind
        types.append(chosen)
    return types


def widen_after(error: str, plan: ColumnPlan) -> bool:
    """Widen the column named in a CSV conversion error; False when nothing can be widened.

    An int64 column meeting a decimal number becomes float64; anything else becomes text.
    Text columns cannot fail to convert except for invalid UTF-8, which is bad input.
    """
    match = _CONVERSION_ERROR.search(error)
    if match is None:
        return False
    index = int(match["index"])
    if index >= len(plan.types) or pa.types.is_string(plan.types[index]):
        return False
    old = plan.types[index]
    value = match["value"]
    new = pa.float64() if pa.types.is_int64(old) and _FLOAT.match(value) else pa.string()
    plan.types[index] = new
    plan.widened.append(f"{plan.names[index]}: {old} -> {new} (value {value[:40]!r})")
    return True
