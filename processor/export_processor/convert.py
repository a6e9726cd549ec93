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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import pyarrow as pa

from export_processor.allocators import limit_malloc, use_memory_pool
from export_processor.column_types import ColumnPlan, Typer, unique_names
from export_processor.errors import (
    BadInputError,
    CancelledError,
    ExportError,
    TransientError,
)
from export_processor.header import first_row
from export_processor.locations import Location, export_output, parse_location
from export_processor.parse_errors import classify, too_long
from export_processor.parser_input import EndMarker, ParserInput
from export_processor.progress import ProgressState
from export_processor.s3_source import S3Read, S3Source
from export_processor.s3client import S3Client
from export_processor.settings import ProcessorSettings
from export_processor.sink import Sink, SinkResult, open_sink
from export_processor.source import ByteSource, FileSource, SourcePin
from export_processor.typed_batches import (
    WIDENED,
    ReadError,
    TypedBatches,
    arrow_encoding,
    open_reader,
)
from export_processor.writers import BatchWriter, new_writer


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
        self.output = export_output(settings)
        self._client = s3_client
        self.progress = progress or ProgressState()
        self._skip = 0
        self._input: ParserInput | None = None
        self.plan: ColumnPlan | None = None
        """The columns' names and types as written (after `run()`)."""
        self.reads = 0
        """How many times the source was opened for reading (at most 2)."""

    @property
    def header_row(self) -> bool:
        """Whether csv output starts with the header row (not in a split export's later ranges)."""
        return True

    @property
    def _source(self) -> ByteSource | None:
        """The source being read (its bytes are the progress's)."""
        return self.progress.source

    # -- reading ---------------------------------------------------------------------------

    def _source_from(self, start: int) -> ByteSource:
        """The configured input, read from byte `start` on (the one place it is opened).

        Raises:
            SourceMissingError: no such object, version, bucket or file.
            SourceChangedError: the object is no longer the version pinned (412).
            TransientError: S3 unreachable or refusing (credentials), or the file unreadable.
        """
        if not self.source_location.is_s3:
            return FileSource(self.source_location.key, start=start)
        assert self._client is not None
        s = self.settings
        source = S3Source(
            S3Read(
                client=self._client,
                location=self.source_location,
                pin=SourcePin(s.source_etag, s.source_version_id),
                chunk_size=s.buffers.read_chunk_size,
                read_ahead=s.buffers.read_ahead,
                start=start,
            )
        )
        # Opened again (a range after reading the head): the same version, its id too.
        self.settings = source.pin.applied(s)
        return source

    def _open_source(self, previous: ByteSource | None = None) -> ByteSource:
        source = previous.reopen() if previous is not None else self._source_from(0)
        self.reads += 1
        self.progress.source = source
        self.progress.bytes_total = source.size
        return source

    def _probe(self, source: ByteSource) -> tuple[list[str], bytes, int]:
        """Read the first block(s) and name the columns; returns the names, the bytes read and
        how many of them the parser must not see (the header row, if any)."""
        s = self.settings
        head = bytes(source.read(s.buffers.block_size))
        if not head:
            raise BadInputError("the source is empty (0 bytes): no header and no rows")
        whole = len(head) < s.buffers.block_size
        while True:
            row = first_row(
                head,
                whole=whole,
                encoding=s.csv.encoding,
                delimiter=s.csv.delimiter,
                quote=s.csv.quote,
            )
            if row is not None:
                break
            if len(head) > s.buffers.block_size:
                raise BadInputError(too_long(s.buffers.block_size))
            more = bytes(source.read(s.buffers.block_size))
            head += more
            whole = len(more) < s.buffers.block_size
        if not row.fields:
            raise BadInputError("the source has no rows (only empty lines)")
        if not s.csv.header:
            return [f"f{i}" for i in range(len(row.fields))], head, 0
        names = unique_names(row.fields)
        if len(names) == 1:
            others = [c for c in (",", ";", "\t", "|") if c != s.csv.delimiter and c in names[0]]
            if others:
                raise BadInputError(
                    f"the header has one column but contains {others[0]!r}: "
                    f"is the delimiter {s.csv.delimiter!r} right?"
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
        typer = Typer(names, export_format=s.export_format, mode=s.csv.column_types)

        def again(first: ByteSource) -> tuple[ByteSource, ParserInput]:
            second = self._open_source(first)
            # A whole block, as the first read: the parser's reads then align with the downloads.
            head = bytes(second.read(max(self._skip, s.buffers.block_size)))
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
            raise BadInputError(
                f"the source is not valid {self.settings.csv.encoding}: {exc}"
            ) from exc
        return names, head

    def _parser_input(
        self, head: bytes, source: ByteSource, names: list[str], *, may_reread: bool = True
    ) -> ParserInput:
        """The parser's view of the input: `head` (already read from `source`), then the rest of
        `source`, without the header row, then the end marker."""
        s = self.settings
        return ParserInput(
            head[self._skip :],
            source,
            marker=EndMarker(columns=len(names), quote=s.csv.quote, delimiter=s.csv.delimiter),
            encoding=arrow_encoding(s.csv.encoding),
            may_reread=may_reread and self.reads < 2,
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
        source.limit_read_ahead(s.buffers.blocks_ahead)
        sink: Sink | None = self._open_sink()
        self._input = parser_input
        batches: TypedBatches | None = None
        writer: BatchWriter | None = None
        rows = 0
        try:
            reader = open_reader(parser_input, typer.names, s)
            batches = TypedBatches(
                reader,
                typer,
                source=source,
                parser_input=parser_input,
                strict=strict,
            )
            for item in batches:
                if item is WIDENED:
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

    def _open_sink(self, location: Location | None = None) -> Sink:
        s = self.settings
        return open_sink(
            location=location or self.output,
            client=self._client,
            part_size=s.buffers.part_size,
            concurrency=s.buffers.upload_concurrency,
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
            gzip_level=s.buffers.gzip_level,
            gzip_threads=s.buffers.gzip_threads,
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
        if isinstance(exc, ReadError):
            rows = exc.rows
            exc = exc.error
        s = self.settings
        if isinstance(exc, pa.ArrowInvalid):
            return self._classify(exc, rows=rows, source_error=source_error)
        if isinstance(exc, UnicodeDecodeError):
            return BadInputError(
                f"the source is not valid {s.csv.encoding} (after row {rows}): {exc}"
            )
        if isinstance(exc, ExportError | KeyboardInterrupt | SystemExit):
            return exc
        if source_error is not None and not isinstance(source_error, CancelledError):
            return source_error
        return TransientError(f"{type(exc).__name__}: {exc}")

    def _classify(
        self, exc: pa.ArrowInvalid, *, rows: int, source_error: ExportError | None
    ) -> ExportError:
        return classify(
            exc,
            rows=rows,
            source_error=source_error,
            block_size=self.settings.buffers.block_size,
            parser_input=self._input,
        )

    def cancel(self) -> None:
        """Stop reading (used from a signal handler; the run then aborts its output)."""
        if self._source is not None:
            self._source.cancel()
