"""Property: whatever CSV is generated, every format reads back as the source under the lossless
rule (docs/processor.md, "Column types"), or the export fails with exit 2 and a reason. The CSVs
are tests/support/csv_files.py's; parser blocks barely longer than the longest line put values on
every side of block boundaries, and a quote left open at the end must fail with exit 2.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings

from export_processor.common import ExitCode
from export_processor.convert import Exporter
from export_processor.errors import BadInputError
from export_processor.settings import ProcessorSettings
from tests.support.corpus import EXTENSIONS
from tests.support.csv_files import FORMATS, Generated, csv_files


def _export(tmp_path: Path, case: Generated, fmt: str) -> tuple[Exporter, Any]:
    source = tmp_path / "in.csv"
    source.write_bytes(case.data)
    exporter = Exporter(
        ProcessorSettings(
            source_uri=source.as_uri(),
            destination_uri=(tmp_path / "out").as_uri() + "/",
            export_format=fmt,
            csv_delimiter=case.delimiter,
            csv_quote=case.quote,
            csv_header=case.header,
            block_size_bytes=case.block_size,
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
