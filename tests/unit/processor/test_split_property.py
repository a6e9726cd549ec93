"""Property: a split export's output equals the single-pod export's (docs/processor.md,
"Splitting"), for the generated CSVs of tests/support/csv_files.py (quoted line ends, doubled
quotes, CRLF, no final line end, four delimiters, two quote characters, a header or not, a quote
left open), every format, 1-5 ranges cut at quotes, line ends, the bytes around them and anywhere:
csv and jsonl byte-identical, csv.gz identical once decompressed, parquet the same schema, rows
and values; a single-pod failure is the split export's failure (same code).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_processor.convert import Exporter
from export_processor.errors import ExportError
from export_processor.settings import ProcessorSettings
from export_processor.split import run_split
from tests.support.csv_files import FORMATS, Generated, csv_files


@st.composite
def cuts_for(draw: st.DrawFn, data: bytes) -> tuple[int, ...]:
    """Offsets between ranges: on quotes and line ends (and a byte either side), or anywhere."""
    marks = [i for i, byte in enumerate(data) if byte in b"\"'\r\n"]
    near = sorted({p + d for p in marks for d in (-1, 0, 1) if 0 <= p + d <= len(data)})
    position = st.sampled_from(near) if near else st.integers(0, len(data))
    count = draw(st.integers(1, 5))
    return tuple(
        sorted(draw(st.one_of(position, st.integers(0, len(data)))) for _ in range(count - 1))
    )


def _settings(source: Path, out: Path, case: Generated, fmt: str) -> ProcessorSettings:
    return ProcessorSettings(
        source_uri=source.as_uri(),
        destination_uri=out.as_uri() + "/",
        export_format=fmt,
        csv_delimiter=case.delimiter,
        csv_quote=case.quote,
        csv_header=case.header,
        block_size_bytes=case.block_size,
    )


def _output(uri: str, fmt: str) -> object:
    """The output at the result's `uri`: a split Parquet export's dataset (`.../in/`), else
    one file (a split export that fell back to one pod writes what one pod writes)."""
    path = Path(uri.removeprefix("file://"))
    if fmt == "parquet":
        table = pq.read_table(path)
        return table.schema, table.to_pylist()
    data = path.read_bytes()
    return gzip.decompress(data) if fmt == "csv.gz" else data


@settings(
    max_examples=int(os.environ.get("EXPORTJOBS_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), case=csv_files())
def test_split_output_equals_the_single_pod_output(
    tmp_path: Path, data: st.DataObject, case: Generated
) -> None:
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))
    source = tmp_path / "in.csv"
    source.write_bytes(case.data)
    cuts = data.draw(cuts_for(case.data), label="cuts")
    for fmt in FORMATS:
        one, split = tmp_path / f"one-{fmt}", tmp_path / f"split-{fmt}"
        try:
            single = Exporter(_settings(source, one, case, fmt), s3_client=None).run()
        except ExportError as expected:
            try:
                run_split(_settings(source, split, case, fmt), None, len(cuts) + 1, cuts)
            except ExportError as got:
                assert got.code == expected.code, (fmt, got, expected)
            else:
                raise AssertionError(f"{fmt}: one pod failed ({expected}), the split did not")
            assert not split.exists() or not any(split.rglob("*")), list(split.rglob("*"))
            continue
        result, summary = run_split(_settings(source, split, case, fmt), None, len(cuts) + 1, cuts)
        assert result.rows == single.rows, (fmt, summary)
        assert _output(result.uri, fmt) == _output(single.uri, fmt), (fmt, summary)
        leftovers = [p for p in split.rglob("*") if p.is_file()]
        dataset = fmt == "parquet" and "fallback" not in summary
        expected_files = 1 + (len(cuts) + 1 if dataset else 0)
        assert len(leftovers) == expected_files, (fmt, leftovers)
