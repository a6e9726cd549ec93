"""The lossless typing rule: which Arrow type each CSV column is written as.

The parser reads every column as text. A column of a typed format (jsonl, parquet) is written
with a type only while every value of it, in every block, reads back as its source text (the
rule, with its exact forms, is in docs/processor.md, "Column types"):

- int64: canonical integers only (`0`, `-12`; no leading zeros, no `+`, no `-0`, within int64);
- float64: decimals whose shortest round-trip text (Arrow's, as the writers print it) equals the
  source once trailing fractional zeros are dropped (`1.50` is 1.5; `0.1` is 0.1; a 21-digit
  decimal is not a double and stays text);
- bool: `true` and `false`, lower case;
- date32 (parquet): `YYYY-MM-DD`; timestamp (parquet): `YYYY-MM-DDTHH:MM:SS`, naive, or with
  `Z` as UTC;
- anything else, and any column whose first block has no value: text (always lossless).

Each check converts the block's text and formats the result back, so the rule is enforced on the
values as written, block by block. A value that breaks a column's type widens it (int64 to
float64 when every earlier integer is one a double prints the same way, anything else to text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as _compute

pc: Any = _compute  # stubs narrower than the kernels

TEXT: pa.DataType = pa.string()
INT: pa.DataType = pa.int64()
FLOAT: pa.DataType = pa.float64()
BOOL: pa.DataType = pa.bool_()
DATE: pa.DataType = pa.date32()
TIMESTAMP: pa.DataType = pa.timestamp("s")
TIMESTAMP_UTC: pa.DataType = pa.timestamp("s", tz="UTC")

FLOAT_EXACT_INTEGERS = 10**10
"""Integers below this magnitude print the same as a double (Arrow writes 1e+10 from there):
the bound under which an int64 column may widen to float64 without re-checking earlier blocks."""

_SAMPLE = 64
_CANDIDATES = {
    "jsonl": (INT, FLOAT, BOOL),
    "parquet": (INT, FLOAT, BOOL, DATE, TIMESTAMP, TIMESTAMP_UTC),
}


_BOOLEANS = pa.array(["true", "false"])


def _all_true(mask: Any) -> bool:
    """True when every non-null value of a boolean array is true."""
    return bool(pc.all(mask).as_py() is not False)


def _decimal_text(text: Any) -> Any:
    """The source text with trailing fractional zeros dropped (`1.50` -> `1.5`, `2.0` -> `2`)."""
    has_point = pc.match_substring(text, ".")
    trimmed = pc.utf8_rtrim(pc.utf8_rtrim(text, characters="0"), characters=".")
    return pc.if_else(has_point, trimmed, text)


def _iso_seconds(text: Any, *, utc: bool) -> bool:
    """Whether every value (already parsed as a timestamp by Arrow) is exactly
    `YYYY-MM-DDTHH:MM:SS` (with `Z` when `utc`): the text Arrow's parse accepted with these
    separators at these places can only be that form. Formatting the timestamps back to compare
    would cost twenty times more (time zones)."""
    form = "____-__-__T__:__:__Z" if utc else "____-__-__T__:__:__"
    if not _all_true(pc.equal(pc.binary_length(text), len(form))):
        return False
    # Null values have no bytes: the values' bytes are fixed-width records.
    offsets_type = "q" if pa.types.is_large_string(text.type) else "i"
    offsets: Any = memoryview(text.buffers()[1]).cast("B").cast(offsets_type)  # type: ignore[call-overload]
    start, end = offsets[text.offset], offsets[text.offset + len(text)]
    data = text.buffers()[2]
    if data is None or start == end:
        return True
    records = memoryview(data)[start:end]
    count = (end - start) // len(form)
    return all(
        bytes(records[position :: len(form)]) == char.encode() * count
        for position, char in enumerate(form)
        if char != "_"
    )


def convert(text: Any, kind: pa.DataType) -> Any | None:
    """The column `text` as `kind` if every value reads back as its source, else None.

    Args:
        text: a string array (nulls are the CSV's empty fields and stay null).
        kind: one of the typed kinds above.
    """
    converted = convert_with_text(text, kind)
    return None if converted is None else converted[0]


def convert_with_text(text: Any, kind: pa.DataType) -> tuple[Any, Any] | None:
    """`convert`, with the values' text as Arrow prints them (what the writers write): for
    integers, booleans and timestamps the source text itself (the rule admits only the forms
    Arrow prints), for decimals and dates the printed text the check compared. JSON Lines writes
    that text instead of printing the values a second time."""
    if pa.types.is_boolean(kind):
        known = pc.is_in(text, value_set=_BOOLEANS)
        if not _all_true(pc.or_(known, pc.is_null(text))):
            return None
        return pc.equal(text, "true"), text
    try:
        values = pc.cast(text, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if pa.types.is_timestamp(kind):
        return (values, text) if _iso_seconds(text, utc=kind.tz is not None) else None
    if pa.types.is_integer(kind):
        # Arrow parses only [-]digits and 0x-hex as integers; of those, exactly the ones with a
        # leading zero (007, 00, 0x10, -0, -07) are not canonical. Cheaper than printing back.
        zero_first = pc.and_(pc.starts_with(text, "0"), pc.greater(pc.binary_length(text), 1))
        canonical = pc.invert(pc.or_(zero_first, pc.starts_with(text, "-0")))
        return (values, text) if _all_true(canonical) else None
    printed = pc.cast(values, TEXT)
    if pa.types.is_floating(kind):
        if not _all_true(pc.is_finite(values)):
            return None  # nan and infinities: JSON has no such numbers
        expected = _decimal_text(text)
    else:
        expected = text
    return (values, printed) if _all_true(pc.equal(printed, expected)) else None


JSON_LITERAL = {b"exportjobs.json": b"literal"}
"""Field metadata of a JSON Lines batch's column holding JSON literals (numbers, booleans) as
text: written unquoted, a null as `null`."""


@dataclass
class ColumnPlan:
    """Names and types of the columns, as the converter writes them."""

    names: list[str]
    types: list[pa.DataType]
    widened: list[str] = field(default_factory=list)
    """Human-readable notes of columns widened after a later value did not fit."""

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(zip(self.names, self.types, strict=True)))


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


class Typer:
    """Applies the rule to each text batch: infers types from the first, checks every later one.

    `apply` returns the typed batch, or None when a value broke a column's type; the plan is then
    already widened. For JSON Lines the typed columns come as the text of their JSON literals
    (field metadata JSON_LITERAL), the values' own printed text: the encoder writes them as they
    are instead of printing the values again (a second float-to-text pass cost more than the
    check).
    """

    def __init__(
        self,
        names: list[str],
        *,
        export_format: str,
        mode: str,
        initial: list[pa.DataType] | None = None,
    ) -> None:
        """`initial`: the types to start from instead of inferring them from the first batch
        (each range of a split export starts from the single-pod export's first block)."""
        self.names = names
        self._candidates: tuple[pa.DataType, ...] = (
            () if mode == "string" else _CANDIDATES.get(export_format, ())
        )
        self._literals = export_format == "jsonl"
        self.plan: ColumnPlan | None = None
        self._int_bounds: dict[int, tuple[int, int]] = {}
        if not self._candidates:
            self.plan = ColumnPlan(names=names, types=[TEXT] * len(names))
        elif initial is not None:
            self.plan = ColumnPlan(names=names, types=list(initial))

    @property
    def int_bounds(self) -> dict[int, tuple[int, int]]:
        """Per int64 column (by index), the least and greatest integer seen while it was int64."""
        return dict(self._int_bounds)

    def final_plan(self) -> ColumnPlan:
        """The plan (every column text when no batch was seen)."""
        if self.plan is None:
            self.plan = ColumnPlan(names=self.names, types=[TEXT] * len(self.names))
        return self.plan

    def infer(self, batch: pa.RecordBatch) -> ColumnPlan:
        """The types the first batch gives (every column text for csv or `string`)."""
        if not self._candidates:
            return ColumnPlan(names=self.names, types=[TEXT] * len(self.names))
        return self._infer(batch)

    def _infer(self, batch: pa.RecordBatch) -> ColumnPlan:
        types: list[pa.DataType] = []
        for index in range(batch.num_columns):
            column = batch.column(index)
            chosen = TEXT
            if column.null_count < len(column):
                head = column.slice(0, _SAMPLE)
                for kind in self._candidates:
                    # A failing cast costs as much as a whole one: try a few values first.
                    if convert(head, kind) is not None and convert(column, kind) is not None:
                        chosen = kind
                        break
            types.append(chosen)
        return ColumnPlan(names=self.names, types=types)

    def _track(self, index: int, values: Any) -> None:
        if values.null_count == len(values):
            return
        bounds = pc.min_max(values).as_py()
        low, high = self._int_bounds.get(index, (bounds["min"], bounds["max"]))
        self._int_bounds[index] = (min(low, bounds["min"]), max(high, bounds["max"]))

    def _widen(self, plan: ColumnPlan, index: int, text: Any) -> tuple[Any, Any]:
        """Widen column `index` for the values `text`; returns them converted to the new type,
        and their text (`convert_with_text`)."""
        old = plan.types[index]
        new, converted = TEXT, (text, text)
        if pa.types.is_int64(old):
            low, high = self._int_bounds.get(index, (0, 0))
            earlier_fit = low > -FLOAT_EXACT_INTEGERS and high < FLOAT_EXACT_INTEGERS
            as_float = convert_with_text(text, FLOAT) if earlier_fit else None
            if as_float is not None:
                new, converted = FLOAT, as_float
        plan.types[index] = new
        plan.widened.append(f"{plan.names[index]}: {old} -> {new}")
        return converted

    def apply(self, batch: pa.RecordBatch, *, settle: bool = False) -> pa.RecordBatch | None:
        """The batch with the plan's types; None if the plan had to widen (see class doc).

        With `settle`, every failing column is widened and the batch is still returned typed by
        the widened plan (only its conformance matters then).
        """
        if self.plan is None:
            self.plan = self._infer(batch)
        plan = self.plan
        columns = []
        widened = False
        for index, kind in enumerate(plan.types):
            text = batch.column(index)
            if kind == TEXT:
                columns.append(text)
                continue
            converted = convert_with_text(text, kind)
            if converted is None:
                widened = True
                converted = self._widen(plan, index, text)
            values, printed = converted
            if pa.types.is_int64(plan.types[index]):
                self._track(index, values)
            columns.append(printed if self._literals else values)
        if widened and not settle:
            return None
        schema = self._literal_schema(plan) if self._literals else plan.schema
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    @staticmethod
    def _literal_schema(plan: ColumnPlan) -> pa.Schema:
        return pa.schema(
            [
                pa.field(name, TEXT)
                if kind == TEXT
                else pa.field(name, TEXT, metadata=JSON_LITERAL)
                for name, kind in zip(plan.names, plan.types, strict=True)
            ]
        )
