"""Awkward CSV inputs, the processor's CLI run on them (file:// URIs), and an independent oracle
(Python's csv module) to check outputs against."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from export_processor import cli

csv.field_size_limit(1 << 30)

EXTENSIONS = {"csv": ".csv", "csv.gz": ".csv.gz", "jsonl": ".jsonl", "parquet": ".parquet"}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small parser blocks, so that small inputs span many blocks."""
    for key in list(os.environ):
        if key.startswith("EXPORTJOBS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EXPORTJOBS_BLOCK_SIZE_BYTES", "65536")


def run(
    tmp_path: Path, data: bytes, fmt: str, *args: str, name: str = "input.csv"
) -> tuple[int, Path, dict[str, object]]:
    source = tmp_path / name
    source.write_bytes(data)
    out = tmp_path / "out"
    message = tmp_path / "termination-log"
    code = cli.run(
        [
            "--source",
            source.as_uri(),
            "--format",
            fmt,
            "--destination",
            out.as_uri() + "/",
            "--termination-message-path",
            str(message),
            *args,
        ]
    )
    payload = json.loads(message.read_text()) if message.exists() else {}
    return code, out / (Path(name).stem + EXTENSIONS[fmt]), payload


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    args: list[str] = field(default_factory=list)
    """Extra CLI flags (--delimiter, --no-header, ...)."""
    env: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    quote: str = '"'
    header: bool = True
    encoding: str = "utf-8-sig"


def _rows_to_csv(rows: list[list[str]], *, delimiter: str = ",", crlf: bool = True) -> bytes:
    out = io.StringIO()
    writer = csv.writer(
        out, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL
    )
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _wide_rows() -> list[list[str]]:
    # Rows of most of a parser block (tests use 64 KiB blocks): every block ends mid-row.
    return [["id", "blob"]] + [
        [str(i), ('wide,"field" ' * 5_000)[: 40_000 + 997 * i]] for i in range(12)
    ]


def _many_columns() -> list[list[str]]:
    header = [f"c{i}" for i in range(1500)]
    return [header] + [[f"r{r}v{i}" for i in range(1500)] for r in range(5)]


def _type_changes() -> bytes:
    # Numbers for far more than one parser block (tests use 64 KiB blocks), then text and decimals.
    lines = ["n,m,flag"] + [f"{i},{i},true" for i in range(20_000)]
    lines += ["n/a,2.5,maybe", "7,3,false"]
    return ("\n".join(lines) + "\n").encode()


CASES = [
    Case(
        "quoting_bom_crlf",
        b"\xef\xbb\xbf"
        + _rows_to_csv(
            [
                ["id", "text", "note"],
                ["1", 'has "quotes", and commas', "multi\r\nline\nvalue"],
                ["2", "", "tab\tinside"],
                ["3", "  spaces kept  ", 'ends with quote"'],
            ]
        ),
    ),
    Case(
        "unicode",
        _rows_to_csv(
            [
                ["name", "city", "emoji"],
                ["Zoë", "東京", "🚀✨"],
                ["Ελένη", "القاهرة", "e\u0301 combining"],
                ["\u2028sep", "Łódź", "\\backslash\\"],
            ]
        ),
    ),
    Case("wide_rows", _rows_to_csv(_wide_rows())),
    Case("many_columns", _rows_to_csv(_many_columns())),
    Case(
        "semicolon_single_quote",
        b"a;b;c\n1;'x;y';'it''s'\n2;plain;''\n",
        args=["--delimiter", ";", "--quote", "'"],
        delimiter=";",
        quote="'",
    ),
    Case(
        "no_header",
        b"1,alpha,2024-01-01\n2,beta,2024-01-02\n",
        args=["--no-header"],
        header=False,
    ),
    Case(
        "latin1",
        "name,word\nRené,façade\nJürgen,Straße\n".encode("latin-1"),
        args=["--encoding", "latin-1"],
        encoding="latin-1",
    ),
    Case("type_changes_mid_file", _type_changes()),
    Case("tabs", b"a\tb\n1\tx y\n", args=["--delimiter", "\\t"], delimiter="\t"),
]


def expected_rows(case: Case) -> tuple[list[str], list[list[str]]]:
    """Header and rows as Python's csv module reads the input (the oracle)."""
    text = case.data.decode(case.encoding)
    rows = list(
        csv.reader(io.StringIO(text, newline=""), delimiter=case.delimiter, quotechar=case.quote)
    )
    if case.header:
        return rows[0], rows[1:]
    width = len(rows[0])
    return [f"f{i}" for i in range(width)], rows


def _text(value: Any) -> str:
    """An output value as the text it came from (None and '' both mean an empty field here)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(expected: str, got: Any) -> bool:
    if isinstance(got, bool):
        return expected.lower() == ("true" if got else "false")
    if isinstance(got, int | float) and not isinstance(got, bool):
        return float(expected) == float(got)
    if hasattr(got, "isoformat"):
        return True  # dates/timestamps are compared by type in dedicated tests
    return expected == _text(got)


def read_output(fmt: str, data: bytes) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of an output file, read with an independent reader per format."""
    if fmt in ("csv", "csv.gz"):
        raw = gzip.decompress(data) if fmt == "csv.gz" else data
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        return rows[0], rows[1:]
    if fmt == "jsonl":
        # split on \n only: U+2028 and friends are legal inside JSON strings.
        objects = [json.loads(line) for line in data.decode("utf-8").split("\n") if line]
        if not objects:
            return [], []
        header = list(objects[0])
        return header, [list(o.values()) for o in objects]
    table = pq.read_table(io.BytesIO(data))
    return table.column_names, [list(r.values()) for r in table.to_pylist()]


def assert_output_matches(case: Case, fmt: str, data: bytes) -> None:
    header, rows = expected_rows(case)
    got_header, got_rows = read_output(fmt, data)
    if fmt != "jsonl" or rows:
        assert got_header == header, (got_header[:5], header[:5])
    assert len(got_rows) == len(rows)
    for index, (want, got) in enumerate(zip(rows, got_rows, strict=True)):
        assert len(got) == len(want), index
        for column, (w, g) in enumerate(zip(want, got, strict=True)):
            assert _same(w, g), (case.name, fmt, index, column, w, g)
