"""One export: stream the CSV from the source, type it losslessly, convert, upload, commit.

Reading (ranged GETs ahead of the parser), parsing (pyarrow's multithreaded streaming reader,
every column as text) and typing (the lossless rule of column_types, on the reader's thread),
converting and uploading (a pool of part uploads) overlap, and each stage holds a bounded number
of blocks: memory does not grow with the input.

The source is read at most twice. The first pass writes with the types inferred from the first
block; when a later value breaks a column's type, the output is aborted and the same pass goes on
to the end of the input only to settle every column's final type; the second pass writes once
with them.
"""

from __future__ import annotations

import codecs
import ctypes
import ctypes.util
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
import pyarrow.csv as pacsv

from export_processor.column_types import TEXT, ColumnPlan, Typer, unique_names
from export_processor.errors import (
    BadInputError,
    CancelledError,
    ExportError,
    TransientError,
)
from export_processor.header import first_row
from export_processor.locations import Location, output_location, parse_location
from export_processor.parser_input import (
    EndMarker,
    ParserInput,
    open_quote_line,
    open_quote_line_in,
)
from export_processor.s3client import S3Client
from export_processor.settings import QUEUED_BATCHES, ProcessorSettings
from export_processor.sink import Sink, SinkResult, open_sink
from export_processor.source import ByteSource, open_source
from export_processor.writers import BatchWriter, new_writer

_STRADDLING = "straddling object straddles two block boundaries"
_ROW_IN_ERROR = re.compile(r"Expected \d+ columns, got \d+: ")
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_END = object()
_WIDENED = object()
"""Sent by the reader thread when a column widened: the output is aborted, reading goes on."""


@dataclass
class ProgressState:
    """Counters the progress reporter samples from another thread."""

    bytes_total: int | None = None
    rows: int = 0
    source: ByteSource | None = None

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_fetched if self.source is not None else 0


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


class _ReadError(Exception):
    """The reader thread failed; carries the rows parsed before the failure."""

    def __init__(self, error: BaseException, rows: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.rows = rows


class _TypedBatches:
    """Runs the CSV reader and the typing on their own thread, `QUEUED_BATCHES` batches ahead.

    Yields typed batches, then `_WIDENED` if a value broke a column's type (after which the
    thread reads on to the end, settling the types, and yields nothing more), and ends after the
    end marker (parser_input.py), whose row it drops; without it, a quote was left open.
    """

    def __init__(
        self,
        reader: pacsv.CSVStreamingReader,
        typer: Typer,
        *,
        source: ByteSource,
        parser_input: ParserInput,
        strict: bool,
    ) -> None:
        self._reader = reader
        self._typer = typer
        self._source = source
        self._input = parser_input
        self._strict = strict
        self.rows = 0
        self.settling = False
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUED_BATCHES)
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
        last_row: list[str | None] = []
        ended = False
        try:
            while not self._stop.is_set():
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    break
                self._source.consumed()
                if batch.num_rows == 0:
                    continue
                last_row = [column[-1].as_py() for column in batch.columns]
                if self._input.marker.is_row(last_row):
                    ended = True  # the end marker: the input ended outside quotes
                    batch = batch.slice(0, batch.num_rows - 1)
                    if batch.num_rows == 0:
                        continue
                self._type(batch)
            else:
                return
            if not ended:
                raise BadInputError(_never_closed(open_quote_line(last_row, self._input)))
            self._put(_END)
        except BaseException as exc:
            self._put(_ReadError(exc, self.rows))

    def _type(self, batch: pa.RecordBatch) -> None:
        typed = self._typer.apply(batch, settle=self.settling)
        self.rows += batch.num_rows
        if self.settling:
            return
        if typed is None:
            if self._strict:
                raise TransientError(
                    "a column's type changed between two reads of the same source "
                    f"({'; '.join(self._typer.final_plan().widened[-3:])})"
                )
            self.settling = True
            self._put(_WIDENED)
            return
        self._put(typed)

    def __iter__(self) -> Iterator[object]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _ReadError):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        # A daemon thread: if it is stuck in a read (a pipe), leave it behind.
        self._thread.join(timeout=2)


def limit_malloc() -> None:
    """glibc's malloc, used for Python's bytes (S3 ranges, parts), raises its mmap threshold
    after each large free and keeps one arena per thread: 8 MiB buffers allocated on the S3
    threads and freed on others then stay in the heap. A fixed 1 MiB threshold returns them
    (docs/processor.md, "Memory")."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc
        pass


def use_memory_pool(decay_ms: int) -> None:
    """Arrow allocates from jemalloc, returning freed pages to the system after `decay_ms`: the
    lowest peak of the three allocators at the same speed (docs/processor.md, "Memory").
    settings.ARROW_DECAY says which formats keep freed pages a little while, and why."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        return
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(decay_ms)


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
        self._source: ByteSource | None = None
        self._skip = 0
        self._input: ParserInput | None = None
        self.plan: ColumnPlan | None = None
        """The columns' names and types as written (after `run()`)."""
        self.reads = 0
        """How many times the source was opened for reading (at most 2)."""
        self.header_row = True
        """Whether csv output starts with the header row (not in a split export's later ranges)."""

    # -- reading ---------------------------------------------------------------------------

    def _source_from(self, start: int) -> ByteSource:
        """The configured input, read from byte `start` on (the one place it is opened)."""
        s = self.settings
        return open_source(
            location=self.source_location,
            client=self._client,
            version_id=s.source_version_id,
            etag=s.source_etag,
            chunk_size=s.read_chunk_size,
            read_ahead=s.read_ahead,
            start=start,
        )

    def _open_source(self, previous: ByteSource | None = None) -> ByteSource:
        source = previous.reopen() if previous is not None else self._source_from(0)
        self.reads += 1
        self._source = source
        self.progress.source = source
        self.progress.bytes_total = source.size
        return source

    def _parse_options(
        self, columns: int, parser_input: ParserInput | None = None
    ) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(
            delimiter=self.settings.delimiter,
            quote_char=self.settings.quote,
            double_quote=True,
            newlines_in_values=True,
            # An empty line has no fields to give a row of several columns (skipped); in a
            # one-column file it is a row whose value is empty (null), and is kept.
            ignore_empty_lines=columns > 1,
            invalid_row_handler=parser_input.invalid_row if parser_input is not None else None,
        )

    @staticmethod
    def _convert_options(names: list[str]) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, TEXT),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )

    def _probe(self, source: ByteSource) -> tuple[list[str], bytes, int]:
        """Read the first block(s) and name the columns; returns the names, the bytes read and
        how many of them the parser must not see (the header row, if any)."""
        s = self.settings
        head = bytes(source.read(s.block_size))
        if not head:
            raise BadInputError("the source is empty (0 bytes): no header and no rows")
        whole = len(head) < s.block_size
        while True:
            row = first_row(
                head, whole=whole, encoding=s.encoding, delimiter=s.delimiter, quote=s.quote
            )
            if row is not None:
                break
            if len(head) > s.block_size:
                raise BadInputError(_too_long(s.block_size))
            more = bytes(source.read(s.block_size))
            head += more
            whole = len(more) < s.block_size
        if not row.fields:
            raise BadInputError("the source has no rows (only empty lines)")
        if not s.header:
            return [f"f{i}" for i in range(len(row.fields))], head, 0
        names = unique_names(row.fields)
        if len(names) == 1:
            others = [c for c in (",", ";", "\t", "|") if c != s.delimiter and c in names[0]]
            if others:
                raise BadInputError(
                    f"the header has one column but contains {others[0]!r}: "
                    f"is the delimiter {s.delimiter!r} right?"
                )
        return names, head, row.end

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ExportResult:
        """Convert and upload; raises an ExportError (BadInputError, SourceMissingError, ...)."""
        started = time.monotonic()
        s = self.settings
        limit_malloc()
        use_memory_pool(s.arrow_decay.ms)
        source = self._open_source()
        names, head = self._read_head(source)
        typer = Typer(names, export_format=s.export_format, mode=s.column_types)

        def again(first: ByteSource) -> tuple[ByteSource, ParserInput]:
            second = self._open_source(first)
            # A whole block, as the first read: the parser's reads then align with the downloads.
            head = bytes(second.read(max(self._skip, s.block_size)))
            return second, self._parser_input(head, second, names)

        result, _ = self._passes(
            source, self._parser_input(head, source, names), typer, again=again, started=started
        )
        return result

    def _passes(
        self,
        source: ByteSource,
        parser_input: ParserInput,
        typer: Typer,
        *,
        again: Callable[[ByteSource], tuple[ByteSource, ParserInput]],
        started: float,
        strict: bool = False,
    ) -> tuple[ExportResult, ByteSource]:
        """Convert once; when a column widened, once more from `again(source)` with the settled
        types. The result, and the source of the pass that wrote it."""
        outcome = self._convert(parser_input, typer, strict=strict)
        first_read = 0
        if outcome is None:
            # A column widened: the first pass settled every type; write once with them.
            first_read = source.bytes_fetched
            source.close()
            source, parser_input = again(source)
            outcome = self._convert(parser_input, typer, strict=True)
        assert outcome is not None
        rows, result = outcome
        self.plan = typer.final_plan()
        exported = ExportResult(
            uri=result.uri,
            bytes=result.bytes,
            rows=rows,
            sha256=result.sha256,
            format=self.settings.export_format,
            bytes_read=first_read + source.bytes_fetched,
            duration_seconds=time.monotonic() - started,
        )
        return exported, source

    def _read_head(self, source: ByteSource) -> tuple[list[str], bytes]:
        """The column names and the bytes read for them (`_probe`), errors as the export's."""
        try:
            names, head, self._skip = self._probe(source)
        except pa.ArrowInvalid as exc:
            raise self._classify(exc, rows=0, source_error=source.error) from exc
        except UnicodeDecodeError as exc:
            raise BadInputError(f"the source is not valid {self.settings.encoding}: {exc}") from exc
        return names, head

    def _parser_input(self, head: bytes, source: ByteSource, names: list[str]) -> ParserInput:
        """The parser's view of the input: `head` (already read from `source`), then the rest of
        `source`, without the header row, then the end marker."""
        s = self.settings
        return ParserInput(
            head[self._skip :],
            source,
            marker=EndMarker(columns=len(names), quote=s.quote, delimiter=s.delimiter),
            encoding=self._encoding,
            may_reread=self.reads < 2,
        )

    def _convert(
        self, parser_input: ParserInput, typer: Typer, *, strict: bool
    ) -> tuple[int, SinkResult] | None:
        """One pass: the rows and the committed output, or None when a column widened (the
        output was aborted and the pass read on to settle the types)."""
        s = self.settings
        self.progress.rows = 0
        source = self._source
        assert source is not None
        source.limit_read_ahead(s.blocks_ahead)
        sink: Sink | None = self._open_sink()
        self._input = parser_input
        batches: _TypedBatches | None = None
        writer: BatchWriter | None = None
        rows = 0
        try:
            reader = self._open_reader(parser_input, typer.names)
            batches = _TypedBatches(
                reader,
                typer,
                source=source,
                parser_input=parser_input,
                strict=strict,
            )
            for item in batches:
                if item is _WIDENED:
                    self._abort(writer, sink)
                    writer, sink = None, None
                    continue
                batch = cast(pa.RecordBatch, item)
                assert sink is not None
                if writer is None:
                    writer = self._new_writer(sink, batch.schema, sample=batch)
                writer.write(batch)
                rows += batch.num_rows
                self.progress.rows = rows
            if sink is None:
                return None
            if writer is None:
                writer = self._new_writer(sink, typer.final_plan().schema)
            writer.finish()
            result = sink.commit()
        except BaseException as exc:
            # What the source reported before we cancel it: pyarrow's read-ahead may still read
            # after the failure, and the cancellation it then meets is ours, not the cause.
            source_error = self._source.error if self._source is not None else None
            # Abort the output first: on SIGTERM the grace period is short, and the reader
            # thread may be blocked on a slow source.
            if self._source is not None:
                self._source.cancel()
            self._abort(writer, sink)
            if batches is not None:
                batches.close()
            raise self._failure(exc, source_error) from exc
        batches.close()
        return rows, result

    def _open_sink(self) -> Sink:
        s = self.settings
        return open_sink(
            location=self.output,
            client=self._client,
            part_size=s.part_size,
            concurrency=s.upload_concurrency,
        )

    def _open_reader(self, parser_input: ParserInput, names: list[str]) -> pacsv.CSVStreamingReader:
        """The streaming CSV reader, every column as text."""
        s = self.settings
        return pacsv.open_csv(
            cast(Any, parser_input),
            read_options=pacsv.ReadOptions(
                block_size=s.block_size, column_names=names, encoding=self._encoding
            ),
            parse_options=self._parse_options(len(names), parser_input),
            convert_options=self._convert_options(names),
        )

    def _new_writer(
        self, sink: Sink, schema: pa.Schema, *, sample: pa.RecordBatch | None = None
    ) -> BatchWriter:
        s = self.settings
        return new_writer(
            export_format=s.export_format,
            sink=sink,
            schema=schema,
            sample=sample,
            gzip_level=s.gzip_level,
            gzip_threads=s.gzip_threads,
            header=self.header_row,
        )

    @staticmethod
    def _abort(writer: BatchWriter | None, sink: Sink | None) -> None:
        # The sink first: what the writer flushes while it stops is then dropped.
        if sink is not None:
            sink.abort()
        if writer is not None:
            writer.discard()

    def _failure(self, exc: BaseException, source_error: ExportError | None) -> BaseException:
        """The error to raise for an exception of the conversion; `source_error` is the one the
        source reported before the conversion cancelled it."""
        rows = 0
        if isinstance(exc, _ReadError):
            rows = exc.rows
            exc = exc.error
        s = self.settings
        if isinstance(exc, pa.ArrowInvalid):
            return self._classify(exc, rows=rows, source_error=source_error)
        if isinstance(exc, UnicodeDecodeError):
            return BadInputError(f"the source is not valid {s.encoding} (after row {rows}): {exc}")
        if isinstance(exc, ExportError | KeyboardInterrupt | SystemExit):
            return exc
        if source_error is not None and not isinstance(source_error, CancelledError):
            return source_error
        return TransientError(f"{type(exc).__name__}: {exc}")

    def _classify(
        self, exc: pa.ArrowInvalid, *, rows: int, source_error: ExportError | None
    ) -> ExportError:
        """A parse error as BAD_CSV, unless the source failed first (`source_error`: its
        failure reached pyarrow as a parse error)."""
        if source_error is not None:
            return source_error
        text = str(exc).strip()
        if _STRADDLING in text:
            return BadInputError(_too_long(self.settings.block_size))
        if text == "Empty CSV file":
            return BadInputError("the source is empty: no header and no rows")
        parser_input = self._input
        if parser_input is not None and parser_input.marker.token in text:
            # The end marker is in the refused row: a quote left open swallowed its start.
            row_text = _ROW_IN_ERROR.split(text, maxsplit=1)[-1]
            return BadInputError(_never_closed(open_quote_line_in(row_text, parser_input)))
        where = f" (after row {rows})" if rows else ""
        return BadInputError(f"{_first_line(text)}{where}")

    def cancel(self) -> None:
        """Stop reading (used from a signal handler; the run then aborts its output)."""
        if self._source is not None:
            self._source.cancel()


def _never_closed(line: int | None) -> str:
    where = f" on line {line}" if line is not None else " in the last row"
    return (
        f"a quote opened{where} is never closed: the rest of the input would have become one value"
    )


def _too_long(limit: int) -> str:
    return (
        f"a row is longer than {limit} bytes (EXPORTJOBS_BLOCK_SIZE_BYTES), or a quote is "
        "never closed"
    )


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else "invalid CSV"
    return line[:500]
