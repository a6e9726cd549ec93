"""One export: stream the CSV from the source, convert it batch by batch, upload, commit.

Reading (ranged GETs ahead of the parser), parsing (pyarrow's multithreaded streaming reader, on
its own thread so it runs ahead of the writer), converting and uploading (a pool of part uploads)
overlap, and each stage holds a bounded number of blocks: memory does not grow with the input.
"""

from __future__ import annotations

import codecs
import io
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
import pyarrow.csv as pacsv

from export_processor.column_types import ColumnPlan, choose_types, unique_names, widen_after
from export_processor.errors import (
    BadInputError,
    CancelledError,
    ExportError,
    TransientError,
)
from export_processor.locations import Location, output_location, parse_location
from export_processor.s3client import S3Client
from export_processor.settings import ProcessorSettings
from export_processor.sink import Sink, SinkResult, open_sink
from export_processor.source import ByteSource, open_source
from export_processor.writers import new_writer

_STRADDLING = "straddling object straddles two block boundaries"
_MAX_RESTARTS = 64
_BATCHES_AHEAD = 2
_END = object()


@dataclass
class ProgressState:
    """Counters the progress reporter samples from another thread."""

    bytes_total: int | None = None
    rows: int = 0
    source: ByteSource | None = None

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_read if self.source is not None else 0


@dataclass(frozen=True)
class ExportResult:
    uri: str
    bytes: int
    rows: int
    sha256: str
    format: str
    bytes_read: int
    duration_seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "uri": self.uri,
            "bytes": self.bytes,
            "rows": self.rows,
            "sha256": self.sha256,
            "format": self.format,
            "bytesRead": self.bytes_read,
            "durationSeconds": round(self.duration_seconds, 3),
        }


class _RestartError(Exception):
    """Start over: a column was widened or the parser block grew."""


class _HeadThenRest(io.RawIOBase):
    """Replays the bytes read for probing, then continues with the source."""

    def __init__(self, head: bytes, rest: ByteSource) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        wanted = len(self._head) if size < 0 else size
        take = self._head[:wanted]
        self._head = self._head[len(take) :]
        more = self._rest.read(wanted - len(take)) if len(take) < wanted else b""
        return bytes(take) + more


class _BatchPrefetcher:
    """Runs the CSV reader on its own thread, `_BATCHES_AHEAD` batches ahead of the writer."""

    def __init__(self, reader: pacsv.CSVStreamingReader) -> None:
        self._reader = reader
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_BATCHES_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="csv-read", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    self._put(_END)
                    return
                self._put(batch)
        except BaseException as exc:
            self._put(exc)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pa.RecordBatch)
            yield item

    def close(self) -> None:
        self._stop.set()
        # A daemon thread: if it is stuck in a read (a pipe), leave it behind.
        self._thread.join(timeout=2)


def _arrow_encoding(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    # pyarrow reads UTF-8 natively (and skips a BOM); any other name makes it transcode.
    return "utf8" if name in ("utf-8", "utf-8-sig") else encoding


class Exporter:
    """Runs one export with the given settings; `run()` returns the result or raises."""

    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        s3_client: S3Client | None,
        progress: ProgressState | None = None,
    ) -> None:
        self.settings = settings
        self.source_location = parse_location(settings.source_uri, prefix=False)
        destination = parse_location(settings.destination_uri, prefix=True)
        self.output: Location = output_location(
            source=self.source_location,
            destination=destination,
            export_format=settings.export_format,
            export_name=settings.export_name,
        )
        self._client = s3_client
        self.progress = progress or ProgressState()
        self._encoding = _arrow_encoding(settings.encoding)
        self._sink: Sink | None = None
        self._source: ByteSource | None = None

    # -- reading ---------------------------------------------------------------------------

    def _open_source(self) -> ByteSource:
        s = self.settings
        source = open_source(
            location=self.source_location,
            client=self._client,
            version_id=s.source_version_id,
            etag=s.source_etag,
            chunk_size=s.read_chunk_size,
            read_ahead=s.read_ahead,
        )
        self._source = source
        self.progress.source = source
        self.progress.bytes_total = source.size
        return source

    def _parse_options(self) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(
            delimiter=self.settings.delimiter,
            quote_char=self.settings.quote,
            double_quote=True,
            newlines_in_values=True,
        )

    def _convert_options(self, column_types: dict[str, pa.DataType] | None) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(
            column_types=column_types or {},
            null_values=[""],
            true_values=["true", "True", "TRUE"],
            false_values=["false", "False", "FALSE"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )

    def _probe(self, source: ByteSource, block_size: int) -> tuple[ColumnPlan, bytes, int]:
        """Read the first block, name and type the columns; returns the plan and the head."""
        s = self.settings
        head = source.read(block_size)
        if not head:
            raise BadInputError("the source is empty (0 bytes): no header and no rows")
        while True:
            try:
                return self._plan_from_head(head, block_size), head, block_size
            except pa.ArrowInvalid as exc:
                if _STRADDLING not in str(exc) or len(head) < block_size:
                    raise
                if block_size * 2 > s.max_block_size:
                    raise BadInputError(_too_long(s.max_block_size)) from None
                more = source.read(block_size)
                block_size *= 2
                head += more

    def _plan_from_head(self, head: bytes, block_size: int) -> ColumnPlan:
        s = self.settings
        # A full head ends mid-row: parse only its first half as one block (the parser carries
        # the cut row over to a next block that is never read). A short head is the whole file.
        probe_block = max(1, len(head) // 2) if len(head) >= block_size else len(head) + 1
        read_options = pacsv.ReadOptions(
            block_size=probe_block,
            autogenerate_column_names=not s.header,
            encoding=self._encoding,
        )
        reader = pacsv.open_csv(
            cast(Any, pa.BufferReader(head)),
            read_options=read_options,
            parse_options=self._parse_options(),
            convert_options=self._convert_options(None),
        )
        names = unique_names(list(reader.schema.names))
        inferred = reader.schema
        if s.header and len(names) == 1:
            others = [c for c in (",", ";", "\t", "|") if c != s.delimiter and c in names[0]]
            if others:
                raise BadInputError(
                    f"the header has one column but contains {others[0]!r}: "
                    f"is the delimiter {s.delimiter!r} right?"
                )
        text_reader = pacsv.open_csv(
            cast(Any, pa.BufferReader(head)),
            read_options=pacsv.ReadOptions(
                block_size=probe_block,
                column_names=names,
                skip_rows=1 if s.header else 0,
                encoding=self._encoding,
            ),
            parse_options=self._parse_options(),
            convert_options=self._convert_options(dict.fromkeys(names, pa.string())),
        )
        try:
            sample = pa.Table.from_batches([text_reader.read_next_batch()])
        except StopIteration:
            sample = pa.table({name: pa.array([], pa.string()) for name in names})
        types = choose_types(
            inferred=inferred,
            sample=sample,
            export_format=s.export_format,
            mode=s.column_types,
        )
        return ColumnPlan(names=names, types=types)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ExportResult:
        """Convert and upload; raises an ExportError (BadInputError, SourceMissingError, ...)."""
        started = time.monotonic()
        s = self.settings
        source = self._open_source()
        try:
            plan, head, block_size = self._probe(source, s.block_size)
        except pa.ArrowInvalid as exc:
            raise self._classify(exc, rows=0) from exc
        except UnicodeDecodeError as exc:
            raise BadInputError(f"the source is not valid {s.encoding}: {exc}") from exc
        stream: io.RawIOBase = _HeadThenRest(head, source)
        for _ in range(_MAX_RESTARTS):
            try:
                rows, result = self._convert(stream, plan, block_size)
            except _RestartError:
                source.close()
                source = self._reopen(source)
                stream = source
                if self._needs_bigger_block:
                    block_size *= 2
                continue
            return ExportResult(
                uri=result.uri,
                bytes=result.bytes,
                rows=rows,
                sha256=result.sha256,
                format=s.export_format,
                bytes_read=source.bytes_read,
                duration_seconds=time.monotonic() - started,
            )
        raise BadInputError("the column types kept changing; giving up")

    def _reopen(self, old: ByteSource) -> ByteSource:
        source = old.reopen()
        self._source = source
        self.progress.source = source
        return source

    _needs_bigger_block = False

    def _convert(
        self, stream: io.RawIOBase, plan: ColumnPlan, block_size: int
    ) -> tuple[int, SinkResult]:
        s = self.settings
        self.progress.rows = 0
        self._needs_bigger_block = False
        source = self._source
        assert source is not None
        source.limit_read_ahead(s.blocks_ahead)
        sink = open_sink(
            location=self.output,
            client=self._client,
            part_size=s.part_size,
            concurrency=s.upload_concurrency,
        )
        self._sink = sink
        prefetcher: _BatchPrefetcher | None = None
        writer = None
        rows = 0
        try:
            reader = pacsv.open_csv(
                cast(Any, stream),
                read_options=pacsv.ReadOptions(
                    block_size=block_size,
                    column_names=plan.names,
                    skip_rows=1 if s.header else 0,
                    encoding=self._encoding,
                ),
                parse_options=self._parse_options(),
                convert_options=self._convert_options(plan.column_types()),
            )
            writer = new_writer(
                export_format=s.export_format,
                sink=sink,
                schema=plan.schema,
                gzip_level=s.gzip_level,
                gzip_threads=s.gzip_threads,
            )
            prefetcher = _BatchPrefetcher(reader)
            for batch in prefetcher:
                source.consumed()
                writer.write(batch)
                rows += batch.num_rows
                self.progress.rows = rows
            writer.finish()
            result = sink.commit()
        except BaseException as exc:
            # Abort the output first: on SIGTERM the grace period is short, and the reader
            # thread may be blocked on a slow source.
            if self._source is not None:
                self._source.cancel()
            if writer is not None:
                writer.discard()
            sink.abort()
            self._sink = None
            if prefetcher is not None:
                prefetcher.close()
            if isinstance(exc, pa.ArrowInvalid):
                text = str(exc)
                if widen_after(text, plan):
                    raise _RestartError from exc
                if _STRADDLING in text and block_size * 2 <= s.max_block_size:
                    self._needs_bigger_block = True
                    raise _RestartError from exc
                raise self._classify(exc, rows=rows) from exc
            if isinstance(exc, UnicodeDecodeError):
                raise BadInputError(
                    f"the source is not valid {s.encoding} (after row {rows}): {exc}"
                ) from exc
            if isinstance(exc, ExportError | KeyboardInterrupt | SystemExit | _RestartError):
                raise
            source_error = self._source.error if self._source is not None else None
            if source_error is not None and not isinstance(source_error, CancelledError):
                raise source_error from exc
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        prefetcher.close()
        self._sink = None
        return rows, result

    def _classify(self, exc: pa.ArrowInvalid, *, rows: int) -> ExportError:
        source_error = self._source.error if self._source is not None else None
        if source_error is not None:
            return source_error
        text = str(exc).strip()
        if _STRADDLING in text:
            return BadInputError(_too_long(self.settings.max_block_size))
        if text == "Empty CSV file":
            return BadInputError("the source is empty: no header and no rows")
        where = f" (after row {rows})" if rows else ""
        return BadInputError(f"{_first_line(text)}{where}")

    def cancel(self) -> None:
        """Stop reading (used from a signal handler; the run then aborts its output)."""
        if self._source is not None:
            self._source.cancel()


def _too_long(limit: int) -> str:
    return (
        f"a row is longer than {limit} bytes (EXPORTJOBS_MAX_BLOCK_SIZE_BYTES), or a quote is "
        "never closed"
    )


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else "invalid CSV"
    return line[:500]
