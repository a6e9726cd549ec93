"""A hypothesis strategy for CSV files the processor must read losslessly or refuse with exit 2.

1-5 columns, each of one kind (integers, decimals, booleans, dates, timestamps, text) with
outliers of other kinds, empty fields (null) and empty strings; optional quoting of any value and
required quoting of values with delimiters, quotes or line ends; four delimiters, two quote
characters, LF or CRLF, a final line end or not, a header or not; parser blocks barely longer than
the longest line; now and then a quote left open at the end. Shared by the single-pod and the
split properties (tests/unit/processor).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from hypothesis import strategies as st

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
