"""The CSV reader (open_reader: pyarrow's streaming reader, every column as text) and the typing
on their own thread (TypedBatches), a bounded queue of typed batches ahead of the writer."""

from __future__ import annotations

import codecs
import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

import pyarrow as pa
import pyarrow.csv as pacsv

from export_processor.column_types import TEXT, Typer
from export_processor.errors import BadInputError, TransientError
from export_processor.parse_errors import never_closed
from export_processor.parser_input import ParserInput, open_quote_line
from export_processor.settings import QUEUED_BATCHES, ProcessorSettings
from export_processor.source import ByteSource

END = object()
WIDENED = object()
"""Sent by the reader thread when a column widened: the output is aborted, reading goes on."""


class ReadError(Exception):
    """The reader thread failed; carries the rows parsed before the failure."""

    def __init__(self, error: BaseException, rows: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.rows = rows


class TypedBatches:
    """Runs the CSV reader and the typing on their own thread, `QUEUED_BATCHES` batches ahead.

    Yields typed batches, then `WIDENED` if a value broke a column's type (after which the
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
                raise BadInputError(never_closed(open_quote_line(last_row, self._input)))
            self._put(END)
        except BaseException as exc:
            self._put(ReadError(exc, self.rows))

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
            self._put(WIDENED)
            return
        self._put(typed)

    def __iter__(self) -> Iterator[object]:
        while True:
            item = self._queue.get()
            if item is END:
                return
            if isinstance(item, ReadError):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        # A daemon thread: if it is stuck in a read (a pipe), leave it behind.
        self._thread.join(timeout=2)


def arrow_encoding(encoding: str) -> str:
    """The name pyarrow is given: it reads UTF-8 natively (and skips a BOM); any other name makes
    it transcode."""
    name = codecs.lookup(encoding).name
    return "utf8" if name in ("utf-8", "utf-8-sig") else encoding


def open_reader(
    parser_input: ParserInput, names: list[str], settings: ProcessorSettings
) -> pacsv.CSVStreamingReader:
    """The streaming CSV reader over `parser_input`, every column as text."""
    encoding = arrow_encoding(settings.csv.encoding)
    return pacsv.open_csv(
        cast(Any, parser_input),
        read_options=pacsv.ReadOptions(
            block_size=settings.buffers.block_size, column_names=names, encoding=encoding
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=settings.csv.delimiter,
            quote_char=settings.csv.quote,
            double_quote=True,
            newlines_in_values=True,
            # An empty line has no fields to give a row of several columns (skipped); in a
            # one-column file it is a row whose value is empty (null), and is kept.
            ignore_empty_lines=len(names) > 1,
            invalid_row_handler=parser_input.invalid_row,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, TEXT),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
