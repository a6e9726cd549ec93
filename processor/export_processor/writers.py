"""Format writers: Arrow record batches in, output bytes into a Sink.

csv and csv.gz are normalised: UTF-8, comma-separated, a header row, text quoted, nulls empty and
unquoted (so an empty field and an empty quoted string stay different), `\\n` line ends.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, cast

import pyarrow as pa
import pyarrow.compute as _compute
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip_threaded

from export_processor.jsonl import JsonLinesEncoder
from export_processor.settings import GZIP_CHUNK_BYTES, PARQUET_ROW_GROUP_BYTES
from export_processor.sink import Sink

pc: Any = _compute  # stubs narrower than the kernels


class BatchWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def finish(self) -> None:
        """Write what is buffered and any footer; the sink is then ready to commit."""

    def discard(self) -> None:
        """Stop without finishing (the sink is aborted by the caller)."""


_gzip_open: Any = igzip_threaded.open  # untyped


class CsvWriter:
    """CSV, or csv.gz: one ordinary gzip member (mtime 0: the same input gives the same bytes)
    deflated by ISA-L on `gzip_threads` threads in the manner of pigz (`isal.igzip_threaded`:
    1 MiB blocks, each with the previous 32 KiB as dictionary)."""

    def __init__(
        self,
        *,
        sink: Sink,
        schema: pa.Schema,
        gzip_level: int | None,
        gzip_threads: int,
        header: bool = True,
    ) -> None:
        self._gzip: Any = (
            _gzip_open(
                sink,
                "wb",
                compresslevel=gzip_level,
                threads=gzip_threads,
                block_size=GZIP_CHUNK_BYTES,
            )
            if gzip_level is not None
            else None
        )
        target: Any = pa.PythonFile(self._gzip or sink, mode="w")
        self._writer = pacsv.CSVWriter(
            target, schema, write_options=pacsv.WriteOptions(include_header=header)
        )

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def finish(self) -> None:
        self._writer.close()
        if self._gzip is not None:
            self._gzip.close()  # the trailer; the sink stays open

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._gzip is not None:
            with contextlib.suppress(Exception):
                self._gzip.close()  # into a sink being aborted: discarded


class JsonlWriter:
    def __init__(self, *, sink: Sink, schema: pa.Schema) -> None:
        self._sink = sink
        self._encoder = JsonLinesEncoder(schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._sink.write(self._encoder.encode(batch))

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


ROW_GROUP_BYTES = PARQUET_ROW_GROUP_BYTES
"""Parser batches are buffered up to this much Arrow data per Parquet row group: parser blocks
are small (a few MiB) and row groups that small would make the file slow to scan."""


DICTIONARY_MAX_DISTINCT_SHARE = 8
"""A column is dictionary-encoded in Parquet when its first batch has at most one distinct value
per this many rows."""


def dictionary_columns(sample: pa.RecordBatch) -> list[str]:
    """The columns worth a Parquet dictionary, judged on a sample batch: few distinct values.

    Arrow tries a dictionary for every column and gives up on a column only once its dictionary
    page is full, in every row group: hashing every value of a column of ids, uuids or free text
    for nothing: less CPU and a smaller file (docs/benchmarks.md).
    """
    rows = sample.num_rows
    return [
        name
        for name, column in zip(sample.schema.names, sample.columns, strict=True)
        if rows and pc.count_distinct(column).as_py() * DICTIONARY_MAX_DISTINCT_SHARE <= rows
    ]


class ParquetWriter:
    """Parquet with zstd; row groups of about ROW_GROUP_BYTES of Arrow data; a dictionary only
    for the columns that have few distinct values in `sample` (all of them without one)."""

    def __init__(
        self, *, sink: Sink, schema: pa.Schema, sample: pa.RecordBatch | None = None
    ) -> None:
        self._writer = pq.ParquetWriter(
            pa.PythonFile(sink, mode="w"),
            schema,
            compression="zstd",
            compression_level=1,
            # The stubs say bool; a list of column names is documented and accepted.
            use_dictionary=cast(bool, True if sample is None else dictionary_columns(sample)),
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._pending, self._pending_bytes = [], 0

    def finish(self) -> None:
        self._flush()
        self._writer.close()

    def discard(self) -> None:
        # Closed now (its footer goes to a sink about to be aborted), not at garbage collection.
        self._pending = []
        with contextlib.suppress(Exception):
            self._writer.close()


def new_writer(
    *,
    export_format: str,
    sink: Sink,
    schema: pa.Schema,
    gzip_level: int,
    gzip_threads: int,
    sample: pa.RecordBatch | None = None,
    header: bool = True,
) -> BatchWriter:
    """The writer for `export_format` (csv, csv.gz, jsonl or parquet); `sample`, the first batch
    if there is one, lets the Parquet writer choose its encodings; `header`: whether csv starts
    with the header row (every range of a split export but the first goes without)."""
    if export_format in ("csv", "csv.gz"):
        return CsvWriter(
            sink=sink,
            schema=schema,
            gzip_level=gzip_level if export_format == "csv.gz" else None,
            gzip_threads=gzip_threads,
            header=header,
        )
    if export_format == "jsonl":
        return JsonlWriter(sink=sink, schema=schema)
    if export_format == "parquet":
        return ParquetWriter(sink=sink, schema=schema, sample=sample)
    raise ValueError(f"unknown format {export_format!r}")
