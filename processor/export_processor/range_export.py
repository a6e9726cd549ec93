"""One range of a split export (ranges.py, range_bounds.py): converted like a whole export, from
the range's first row to its end, into the range's part, with the kinds every range starts
from."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow as pa

from export_processor.allocators import limit_malloc, use_memory_pool
from export_processor.column_types import Typer
from export_processor.convert import Exporter, ExportResult
from export_processor.errors import InvalidConfigError
from export_processor.locations import Location, part_location
from export_processor.parser_input import ParserInput
from export_processor.progress import ProgressState
from export_processor.range_bounds import RangeCut, RangeSource, guess_start, rows_fit
from export_processor.range_sink import RangePartsSink
from export_processor.ranges import RangePlan, RangeReport, RangeSpec, kind_name, kind_of, offsets
from export_processor.s3_source import S3Source
from export_processor.s3client import S3Client
from export_processor.settings import ProcessorSettings
from export_processor.sink import Sink
from export_processor.source import ByteSource
from export_processor.typed_batches import open_reader


class RangeExporter(Exporter):
    """Converts range `spec.index` of `spec.count`; `report` says where it started and ended and
    the kinds it wrote (also when it failed: its start)."""

    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        s3_client: S3Client | None,
        spec: RangeSpec,
        progress: ProgressState | None = None,
    ) -> None:
        super().__init__(settings, s3_client=s3_client, progress=progress)
        self.spec = spec
        self.report: RangeReport | None = None
        self._parts_sink: RangePartsSink | None = None

    @property
    def header_row(self) -> bool:
        return self.spec.index == 0

    def _open_sink(self, location: Location | None = None) -> Sink:
        """Into the export's upload when it was prepared (range_sink.py), else a part object."""
        spec, s = self.spec, self.settings
        if spec.upload_id is None or not self.output.is_s3 or s.export_format == "parquet":
            return super()._open_sink(part_location(self.output, s.export_format, spec.index))
        assert self._client is not None
        self._parts_sink = RangePartsSink(
            client=self._client,
            location=self.output,
            upload_id=spec.upload_id,
            index=spec.index,
            count=spec.count,
            part_size=s.buffers.part_size,
            concurrency=s.buffers.upload_concurrency,
        )
        return self._parts_sink

    def read_plan(
        self, source: ByteSource, *, known: Sequence[tuple[str, list[str]]] = ()
    ) -> RangePlan:
        """The header row and the kinds of the single-pod export's first parser block.

        `known`: (digest, kinds) the ranges reported (their plan's digest, the kinds they
        ended with). When kinds give this head a plan of that digest, they are the first
        block's (the digest covers them), and the block is not parsed again."""
        s = self.settings
        names, head = self._read_head(source)
        if source.size is None:
            raise InvalidConfigError("a split export needs a source of known size, not a pipe")
        version = source.pin.identity if isinstance(source, S3Source) else ""
        for digest, named in known:
            plan = RangePlan(names, self._skip, named, source.size, version)
            if plan.digest == digest:
                return plan
        typer = Typer(names, export_format=s.export_format, mode=s.csv.column_types)
        kinds = typer.final_plan().types if typer.plan is not None else None
        if kinds is None:
            kinds = self._first_block_kinds(typer, self._parser_input(head, source, names))
        return RangePlan(names, self._skip, [kind_name(k) for k in kinds], source.size, version)

    def _first_block_kinds(self, typer: Typer, parser_input: ParserInput) -> list[pa.DataType]:
        """Infer as one pod does: from the first batch with rows (the end marker's row dropped)."""
        source = self._source
        assert source is not None
        self._input = parser_input
        source.limit_read_ahead(self.settings.buffers.blocks_ahead)
        try:
            reader = open_reader(parser_input, typer.names, self.settings)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return typer.final_plan().types
                source.consumed()
                last = [column[-1].as_py() for column in batch.columns] if batch.num_rows else []
                if last and parser_input.marker.is_row(last):
                    batch = batch.slice(0, batch.num_rows - 1)
                if batch.num_rows:
                    return typer.infer(batch).types
        except pa.ArrowInvalid as exc:
            raise self._classify(exc, rows=0, source_error=source.error) from exc
        finally:
            source.cancel()

    def _start(self, source: ByteSource, plan: RangePlan, offset: int) -> tuple[int, bool]:
        """The range's first row: verified (the first range, or given) or guessed."""
        if self.spec.index == 0:
            return plan.data_start, False
        if self.spec.start is not None:
            return self.spec.start, False
        return self._guess(source, plan, offset), True

    def _end(self, source: ByteSource, plan: RangePlan, offset: int | None) -> int | None:
        """Where the range ends when it need not be found by the quotes' parity: known (a redo
        with other kinds), or the next range's start as that range guesses it (the same bytes
        give the same guess). A guess inside a quoted value leaves this range's parse with a
        quote open at its end: it fails, and the finishing step redoes it by parity."""
        if offset is None or self.spec.end is not None:
            return self.spec.end
        if self.spec.parity_end:
            return None
        return self._guess(source, plan, offset)

    def _guess(self, source: ByteSource, plan: RangePlan, offset: int) -> int:
        s = self.settings

        def fits(data: bytes, whole: bool) -> bool:
            return rows_fit(
                data,
                columns=len(plan.names),
                delimiter=s.csv.delimiter,
                quote=s.csv.quote,
                encoding=s.csv.encoding,
                whole=whole,
            )

        return guess_start(source, offset, limit=s.buffers.block_size, size=plan.size, fits=fits)

    def _open_range(self, start: int, stop: int | None, *, exact: bool) -> RangeSource:
        s = self.settings
        inner = self._source_from(start)
        # A row of up to two blocks may parse in one pod (one spanning three never does).
        quote = s.csv.quote.encode("ascii")
        return RangeSource(inner, RangeCut(start, stop, quote, 2 * s.buffers.block_size, exact))

    def _use(self, source: RangeSource, until: int) -> RangeSource:
        """Read `source` now; its range ends at `until` (for the progress)."""
        self.reads += 1
        self.progress.source = source
        assert self.report is not None
        self.progress.bytes_total = until - self.report.start
        return source

    def run(self) -> ExportResult:
        started = time.monotonic()
        s, spec = self.settings, self.spec
        limit_malloc()
        use_memory_pool(s.arrow_decay.ms)
        head_source = self._open_source()
        try:
            plan = spec.plan or self.read_plan(head_source)
            bounds = offsets(plan, spec.count, spec.cuts)
            start, guessed = self._start(head_source, plan, bounds[spec.index])
            end = self._end(head_source, plan, None if spec.last else bounds[spec.index + 1])
        finally:
            head_source.close()
        self.reads = 0
        self.report = RangeReport(spec.index, spec.count, start, guessed, plan.digest)
        stop = end if end is not None else None if spec.last else bounds[spec.index + 1]
        until = plan.size if stop is None else stop
        source = self._use(self._open_range(start, stop, exact=end is not None), until)
        typer = Typer(
            plan.names,
            export_format=s.export_format,
            mode=s.csv.column_types,
            initial=[kind_of(k) for k in (spec.kinds or plan.kinds)],
        )
        self._skip = 0

        def again(first: ByteSource) -> tuple[ByteSource, ParserInput]:
            assert isinstance(first, RangeSource)
            second = self._use(first.reopen(), until)
            return second, self._parser_input(b"", second, plan.names, may_reread=False)

        result, last = self._passes(
            source,
            self._parser_input(b"", source, plan.names, may_reread=False),
            typer,
            again=again,
            started=started,
            strict=spec.kinds is not None,
        )
        assert isinstance(last, RangeSource)
        # The end found, or where the source ended (the parser stops at its short read).
        self.report.end = last.end if last.end is not None else last.position
        self.report.kinds = [kind_name(k) for k in typer.final_plan().types]
        self.report.int_bounds = typer.int_bounds
        if self._parts_sink is not None:
            self.report.upload = self._parts_sink.uploaded()
        return result
