"""Property: whatever CSV is generated, every format reads back as the source under the lossless
rule (docs/processor.md, "Column types"), or the export fails with exit 2 and a reason.

Generated: 1-5 columns, each of one kind (integers, decimals, booleans, dates, timestamps, text)
with outliers of other kinds, empty fields (null) and empty strings; optional quoting of any value
and required quoting of values with delimiters, quotes or line ends; four delimiters, two quote
characters, LF or CRLF, a final line end or not, a header or not; parser blocks barely longer
than the longest line, so values fall on every side of block boundaries. A quote left open at the
end is generated too, and must fail with exit 2.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_processor.common import ExitCode
from export_processor.convert import Exporter
from export_processor.errors import BadInputError
from export_processor.settings import ProcessorSettings
from tests.unit.processor.corpus import EXTENSIONS

FORMATS = ("csv", "csv.gz", "jsonl", "parquet")


_int64 = st.integers(-(2**63), 2**63 - 1).map(str)
_odd_numbers = st.sampled_from(
    ["007", "+5", "-0", "00", "1e3", ".5", "1.", "nan", "inf", "0x10", "9223372036854775808"]
)
_decimals = st.one_of(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**6), max_value=10**6
    ),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
).map(str)
_booleans = st.sampled_from(["true", "false", "True", "FALSE"])
_dates = st.dates().map(datetime.date.isoformat)
_timestamps = st.builds(
    lambda moment, utc, sep: moment.replace(microsecond=0).isoformat(sep) + ("Z" if utc else ""),
    st.datetimes(),
    st.booleans(),
    st.sampled_from(["T", " "]),
)
_text = st.text(
    alphabet=st.sampled_from(list("ab yz09,;|\t\"'\n\r.-é東🚀")) | st.characters(codec="utf-8"),
    max_size=12,
).filter(lambda s: "\x00" not in s)
KINDS = {
    "int": _int64,
    "decimal": _decimals,
    "bool": _booleans,
    "date": _dates,
    "timestamp": _timestamps,
    "text": _text,
}


@st.composite
def _value(draw: st.DrawFn, kind: str) -> str | None:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return None  # an empty field
    if roll == 1:
        return ""  # an empty (quoted) string
    if roll == 2:
        return draw(st.one_of(_odd_numbers, *KINDS.values()))  # an outlier
    return draw(KINDS[kind])


@dataclass
class Generated:
    data: bytes
    names: list[str]
    rows: list[list[str | None]]
    delimiter: str
    quote: str
    header: bool
    block_size: int
    open_quote_at_end: bool


def _field(value: str | None, *, delimiter: str, quote: str, force: bool) -> str:
    if value is None:
        return ""
    special = (delimiter, quote, "\n", "\r")
    if force or value == "" or any(c in value for c in special):
        return quote + value.replace(quote, quote + quote) + quote
    return value


@st.composite
def csv_files(draw: st.DrawFn) -> Generated:
    width = draw(st.integers(1, 5))
    kinds = [draw(st.sampled_from(sorted(KINDS))) for _ in range(width)]
    count = draw(st.integers(0, 30))
    rows = [[draw(_value(kind)) for kind in kinds] for _ in range(count)]
    if width == 1:
        # A one-column row whose value is empty is an empty line: it cannot be the last line
        # without a line end after it, and a file of only empty lines has no first row to name.
        rows = [r for r in rows if r[0] is not None] if not rows or rows[0][0] is None else rows
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    quote = draw(st.sampled_from(['"', "'"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    header = draw(st.booleans()) or not rows
    names = [f"c{i}" for i in range(width)]
    lines = []
    if header:
        lines.append(
            delimiter.join(
                _field(n, delimiter=delimiter, quote=quote, force=draw(st.booleans()))
                for n in names
            )
        )
    for row in rows:
        lines.append(
            delimiter.join(
                _field(v, delimiter=delimiter, quote=quote, force=draw(st.booleans())) for v in row
            )
        )
    final_newline = draw(st.booleans()) or (width == 1 and bool(rows) and rows[-1][0] is None)
    text = newline.join(lines) + (newline if final_newline else "")
    open_quote = draw(st.integers(0, 9)) == 0 and bool(rows)
    if open_quote:
        # The last row's last field opens a quote that never closes.
        last = [_field(v, delimiter=delimiter, quote=quote, force=True) for v in rows[-1][:-1]]
        tail = delimiter.join([*last, quote + "never closed" + newline + "more"])
        text = newline.join([*lines[:-1], tail])
    data = text.encode("utf-8")
    # A row with a line end inside a value is longer than any of its lines: measure rows.
    longest = max((len((line + newline).encode()) for line in lines), default=0)
    block = max(64, longest + 2) * draw(st.integers(1, 3))
    return Generated(data, names, rows, delimiter, quote, header, block, open_quote)


def _export(tmp_path: Path, case: Generated, fmt: str) -> tuple[Exporter, Any]:
    source = tmp_path / "in.csv"
    source.write_bytes(case.data)
    exporter = Exporter(
        ProcessorSettings(
            source_uri=source.as_uri(),
            destination_uri=(tmp_path / "out").as_uri() + "/",
            export_format=fmt,
            delimiter=case.delimiter,
            quote=case.quote,
            header=case.header,
            block_size=case.block_size,
        ),
        s3_client=None,
    )
    return exporter, exporter.run()


def _expected_csv(names: list[str], rows: list[list[str | None]]) -> bytes:
    def field(value: str | None) -> str:
        return "" if value is None else '"' + value.replace('"', '""') + '"'

    lines = [",".join(field(n) for n in names)] + [",".join(field(v) for v in r) for r in rows]
    return "".join(line + "\n" for line in lines).encode()


def _same(source: str | None, got: Any, kind: pa.DataType) -> bool:
    """Whether a value read back is its source under the rule (`kind`: the column's type)."""
    if source is None or got is None:
        return source is got
    if pa.types.is_floating(kind):
        # By value: `1.50` is 1.5; JSON Lines prints an integral double like an integer.
        return isinstance(got, int | float) and Decimal(repr(got)) == Decimal(source)
    if isinstance(got, bool):
        return source == ("true" if got else "false")
    if isinstance(got, int):
        return source == str(got)
    if isinstance(got, datetime.datetime):
        text = got.replace(tzinfo=None).isoformat()
        return source == (text + "Z" if got.tzinfo is not None else text)
    if isinstance(got, datetime.date):
        return source == got.isoformat()
    return bool(source == got)


def _read_back(fmt: str, data: bytes, width: int) -> list[list[Any]]:
    if fmt == "jsonl":
        return [list(json.loads(line).values()) for line in data.decode().split("\n") if line]
    table = pq.read_table(io.BytesIO(data))
    return [list(row.values()) for row in table.to_pylist()]


@settings(
    # A soak run: EXPORTJOBS_PROPERTY_EXAMPLES=2000 pytest tests/unit/processor/test_property.py
    max_examples=int(os.environ.get("EXPORTJOBS_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=csv_files())
def test_every_format_reads_back_the_source_or_exits_2(tmp_path: Path, case: Generated) -> None:
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # one directory per example
    for fmt in FORMATS:
        try:
            exporter, result = _export(tmp_path, case, fmt)
        except BadInputError as exc:
            assert exc.exit_code == ExitCode.BAD_INPUT
            assert exc.message
            assert case.open_quote_at_end, (fmt, exc.message, case)
            assert "never closed" in exc.message or "columns" in exc.message
            assert not (tmp_path / "out" / ("in" + EXTENSIONS[fmt])).exists()
            continue
        assert not case.open_quote_at_end, (fmt, case)
        assert exporter.reads <= 2
        assert result.rows == len(case.rows), (fmt, case)
        data = (tmp_path / "out" / ("in" + EXTENSIONS[fmt])).read_bytes()
        names = case.names if case.header else [f"f{i}" for i in range(len(case.names))]
        if fmt in ("csv", "csv.gz"):
            text = gzip.decompress(data) if fmt == "csv.gz" else data
            assert text == _expected_csv(names, case.rows), fmt
            continue
        got = _read_back(fmt, data, len(names))
        assert len(got) == len(case.rows)
        assert exporter.plan is not None
        for want_row, got_row in zip(case.rows, got, strict=True):
            for want, value, kind in zip(want_row, got_row, exporter.plan.types, strict=True):
                assert _same(want, value, kind), (fmt, want, value, kind, case)
