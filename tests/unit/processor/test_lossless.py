"""The lossless typing rule, the end-of-input checks and the two-read bound, end to end on files.

The parser blocks are 64 KiB here (fixture in test_cli_files), so a value placed after 20,000
rows lies many blocks after the first, where the types were inferred.
"""

from __future__ import annotations

import datetime
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_processor.column_types import BOOL, DATE, FLOAT, INT, TIMESTAMP, TIMESTAMP_UTC, convert
from export_processor.convert import Exporter
from export_processor.settings import ProcessorSettings
from tests.support.corpus import run, small_blocks  # noqa: F401 (fixture)

MANY = 20_000


@pytest.mark.parametrize(
    ("kind", "values", "typed"),
    [
        (INT, ["0", "-12", "9223372036854775807", "-9223372036854775808"], True),
        (INT, ["007"], False),
        (INT, ["+7"], False),
        (INT, ["-0"], False),
        (INT, ["0x10"], False),
        (INT, ["9223372036854775808"], False),
        (INT, ["12345678901234567890123"], False),
        (INT, ["1.0"], False),
        (INT, [""], False),
        (FLOAT, ["1.5", "0.1", "-2.25", "1.50", "10.0", "3", "0.000015"], True),
        (FLOAT, ["1.2345678901234567890"], False),  # 20 digits: not a double
        (FLOAT, ["123456789012345678901.5"], False),
        (FLOAT, ["99999999999999999"], False),  # a double prints 1e+17
        (FLOAT, ["1e3"], False),
        (FLOAT, ["+1.5"], False),
        (FLOAT, [".5"], False),
        (FLOAT, ["nan"], False),
        (FLOAT, ["inf"], False),
        (FLOAT, ["007.5"], False),
        (BOOL, ["true", "false"], True),
        (BOOL, ["True"], False),
        (BOOL, ["TRUE"], False),
        (BOOL, ["1"], False),
        (DATE, ["2024-01-31"], True),
        (DATE, ["2024-1-31"], False),
        (DATE, ["2024-02-30"], False),
        (TIMESTAMP, ["2024-01-02T03:04:05"], True),
        (TIMESTAMP, ["2024-01-02 03:04:05"], False),
        (TIMESTAMP, ["2024-01-02T03:04"], False),
        (TIMESTAMP, ["2024-01-02T03:04:05.5"], False),
        (TIMESTAMP, ["2024-01-02"], False),
        (TIMESTAMP_UTC, ["2024-01-02T03:04:05Z"], True),
        (TIMESTAMP_UTC, ["2024-01-02T03:04:05+01:00"], False),
    ],
)
def test_a_value_is_typed_only_when_it_reads_back_as_its_source(
    kind: pa.DataType, values: list[str], typed: bool
) -> None:
    column = pa.array([*values, None], pa.string())
    result = convert(column, kind)
    assert (result is not None) == typed
    if result is not None:
        assert result.type == kind
        assert result.null_count == 1


def _late(value: str, *, first: str = "1") -> bytes:
    """A CSV whose column `v` holds `first`-like integers for many blocks, then `value`."""
    lines = ["k,v"] + [f"{i},{first}{i % 10}" for i in range(MANY)] + [f"x,{value}", "y,3"]
    return ("\n".join(lines) + "\n").encode()


def _values(fmt: str, output: Path, column: str) -> list[Any]:
    if fmt == "parquet":
        return list(pq.read_table(output).column(column).to_pylist())
    return [json.loads(line)[column] for line in output.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize(
    ("late", "kind"),
    [
        ("007", "text"),  # a leading zero many blocks after the first
        ("12345678901234567890123", "text"),  # 23 digits: beyond int64
        ("99999999999999999", "int"),  # within int64: stays an exact integer
        ("123456789.123456789012", "text"),  # 21 significant digits: not a double
        ("2.5", "float"),  # a decimal a double holds: int64 widens to float64
        ("+5", "text"),
    ],
)
def test_a_late_value_keeps_every_value_of_its_column(
    tmp_path: Path, fmt: str, late: str, kind: str
) -> None:
    code, output, payload = run(tmp_path, _late(late), fmt)
    assert code == 0, payload
    values = _values(fmt, output, "v")
    expected = [f"1{i % 10}" for i in range(MANY)] + [late, "3"]
    if kind == "text":
        assert values == expected
    elif kind == "int":
        assert values == [int(v) for v in expected]
    else:
        assert values == [float(v) for v in expected]


def test_an_integer_column_with_large_values_widens_to_text_not_to_float(tmp_path: Path) -> None:
    # 2**60 is exact in int64 but a double prints it as 1.152921504606847e+18: widening this
    # column to float64 would change it, so a late decimal makes it text.
    data = _late("2.5", first=str(2**60))
    code, output, _ = run(tmp_path, data, "jsonl")
    assert code == 0
    values = _values("jsonl", output, "v")
    assert values[0] == f"{2**60}0"
    assert values[-2:] == ["2.5", "3"]


def test_typed_values_read_back_as_their_source_text(tmp_path: Path) -> None:
    data = (
        b"i,f,b,d,t,u\n"
        b"-12,1.50,true,2024-01-31,2024-01-02T03:04:05,2024-01-02T03:04:05Z\n"
        b"0,0.1,false,1999-12-31,1999-12-31T23:59:59,1999-12-31T23:59:59Z\n"
        b",,,,,\n"
    )
    code, output, _ = run(tmp_path, data, "parquet")
    assert code == 0
    table = pq.read_table(output)
    # Parquet has no second unit: timestamp[s] is stored (and read back) as milliseconds.
    assert table.schema.types == [
        INT,
        FLOAT,
        BOOL,
        DATE,
        pa.timestamp("ms"),
        pa.timestamp("ms", tz="UTC"),
    ]
    rows = table.to_pylist()
    assert [r["i"] for r in rows] == [-12, 0, None]
    assert [r["f"] for r in rows] == [1.5, 0.1, None]
    assert [r["d"].isoformat() for r in rows[:2]] == ["2024-01-31", "1999-12-31"]
    assert [r["t"].isoformat() for r in rows[:2]] == ["2024-01-02T03:04:05", "1999-12-31T23:59:59"]
    code, output, _ = run(tmp_path, data, "jsonl")
    lines = output.read_text().splitlines()
    assert lines[0] == (
        '{"i":-12,"f":1.5,"b":true,"d":"2024-01-31","t":"2024-01-02T03:04:05",'
        '"u":"2024-01-02T03:04:05Z"}'
    )
    assert json.loads(lines[2]) == dict.fromkeys("ifbdtu")


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "parquet"])
@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'a,b\n1,x\n2,"unterminated\n3,y\n4,z\n', 3),  # the example
        (b'a,b\n1,x\n2,"no newline at the end', 3),
        (b'a,b\n1,x\n2,"with ""doubled"" quotes\n3,y', 3),
        (b'a,b\n1,"two\nlines"\n2,"open\r\n', 4),
        (b'a,b\n1,x\n2,"', 3),
        (b'a,b\n"1\n2",x\n3,"', 4),
        (b'a,"b\n', 1),  # the header itself
        (b'a\n1\n"open\n2\n', 3),  # one column: no width error, the marker is swallowed
        (b'a,b\n1,x\n"2\n3,y\n4', 3),
        (b'a,b\n1,x\n2,"' + b"y" * 300 + b"\n3,z\n", None),  # pyarrow cuts the row it quotes
    ],
)
def test_a_quote_open_at_the_end_is_bad_input(
    tmp_path: Path, fmt: str, data: bytes, line: int
) -> None:
    code, output, payload = run(tmp_path, data, fmt)
    assert code == 2, payload
    error = payload["error"]
    assert isinstance(error, dict)
    assert error["code"] == "BAD_CSV"
    message = str(error["message"])
    assert "never closed" in message
    if line is not None:
        assert f"quote opened on line {line} is never closed" in message or "first row" in message
    assert not output.exists()


@pytest.mark.parametrize(
    "data",
    [
        b'a,b\n1,""\n',
        b'a,b\n1,""',
        b'a,b\n1,"x"""\n',
        b'a,b\n1,"x"""',
        b'a,b\n1,"""x"\n',
        b'a,b\n1,"x\n"',
        b'a,b\n1,x"\n',
        b'a,b\n1,x"',
        b'a\n""',
        b'a\n"x"',
        b'a\n"\n"\n',  # a value that is a line end, then a line end
        b'a\n"\n"',
        b'a,b\n1,"\r\n"\r\n',
        b'a\n"\r\n"\r\n',
        b"a\n1\n\n",
    ],
)
def test_closed_quotes_at_the_end_are_fine(tmp_path: Path, data: bytes) -> None:
    code, _, payload = run(tmp_path, data, "jsonl")
    assert code == 0, payload


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_empty_lines_are_null_rows_of_a_one_column_file_and_skipped_otherwise(
    tmp_path: Path, fmt: str
) -> None:
    code, _, payload = run(tmp_path, b"a\n1\n\n2\n\n", fmt)
    assert code == 0
    assert payload["rows"] == 4
    code, _, payload = run(tmp_path, b"a,b\n1,2\n\n3,4\n\n", fmt)
    assert code == 0
    assert payload["rows"] == 2


def _exporter(tmp_path: Path, data: bytes, fmt: str) -> Exporter:
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    settings = ProcessorSettings(
        source_uri=source.as_uri(),
        destination_uri=(tmp_path / "out").as_uri() + "/",
        export_format=fmt,
        block_size_bytes=64 * 1024,
    )
    return Exporter(settings, s3_client=None)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_source_is_read_at_most_twice_whatever_changes_late(tmp_path: Path, fmt: str) -> None:
    # Five columns that each change type in a different late block, one of them twice
    # (int -> float -> text): the first pass settles all of them, the second writes once.
    rows = [f"{i},{i},{i},true,2024-01-01" for i in range(60_000)]
    rows[20_000] = "20000,2.5,x,true,2024-01-01"
    rows[30_000] = "30000,30000,30000,maybe,2024-01-01"
    rows[40_000] = "40000,n/a,40000,true,2024-01-01"
    rows[59_999] = "007,59999,59999,true,soon"
    data = ("a,b,c,d,e\n" + "\n".join(rows) + "\n").encode()
    exporter = _exporter(tmp_path, data, fmt)
    result = exporter.run()
    assert exporter.reads == 2
    assert result.rows == 60_000
    assert result.bytes_read == 2 * len(data)  # the result counts every byte read
    output = tmp_path / "out" / ("in." + fmt)
    for column, index, value in (("a", 59_999, "007"), ("b", 40_000, "n/a"), ("c", 20_000, "x")):
        values = _values(fmt, output, column)
        assert values[index] == value
        assert values[1] == "1"
    if fmt == "parquet":
        assert set(pq.read_schema(output).types) == {pa.string()}


def test_a_file_without_surprises_is_read_once(tmp_path: Path) -> None:
    data = ("a,b\n" + "".join(f"{i},{i}.5\n" for i in range(50_000))).encode()
    exporter = _exporter(tmp_path, data, "parquet")
    exporter.run()
    assert exporter.reads == 1


_NUMBERISH = st.text(alphabet="0123456789-+.xeE ", max_size=22) | st.integers().map(str)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_NUMBERISH, min_size=1, max_size=5))
def test_the_integer_and_decimal_checks_are_the_print_back_rule(values: list[str]) -> None:
    column = pa.array(values, pa.string())
    as_int = convert(column, INT)
    expected_int = all(
        re.fullmatch(r"-?[0-9]+", v) and str(int(v)) == v and -(2**63) <= int(v) < 2**63
        for v in values
    )
    assert (as_int is not None) == expected_int, values
    as_float = convert(column, FLOAT)
    if as_float is not None:
        for source, value in zip(values, as_float.to_pylist(), strict=True):
            assert Decimal(repr(value)) == Decimal(source), (source, value)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime.datetime(1, 1, 1)),
    utc=st.booleans(),
    text=st.text(alphabet="0123456789-:TZ +.", max_size=21),
)
def test_the_timestamp_check_is_the_isoformat_rule(
    moment: datetime.datetime, utc: bool, text: str
) -> None:
    kind = TIMESTAMP_UTC if utc else TIMESTAMP
    suffix = "Z" if utc else ""
    for source in (moment.replace(microsecond=0).isoformat() + suffix, text):
        result = convert(pa.array([source]), kind)
        if result is None:
            continue
        value = result.to_pylist()[0]
        assert value.replace(tzinfo=None).isoformat() + suffix == source
