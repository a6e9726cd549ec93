"""What the CSV parser reads, and the end-of-input check pyarrow does not make.

pyarrow accepts a quote still open at the end of the input and makes everything after it (other
rows included) one value of the last row: rows lost, success reported. So the parser input ends
with one more row, an end marker: every field a quoted random token. If the input ended outside
quotes, the marker is parsed as a row of its own, exactly, and dropped. If a quote was still open,
the marker's first quote closes it and the marker never comes out as a row of its own (the last
row then has the wrong width, a parse error naming the token, or token text inside a field):
the export fails with the line the quote opened on.
"""

from __future__ import annotations

import codecs
import io
import uuid
from dataclasses import dataclass, field
from typing import Literal

import pyarrow.csv as pacsv

from export_processor.source import ByteSource


@dataclass(frozen=True)
class EndMarker:
    """The row appended after the input."""

    columns: int
    quote: str
    delimiter: str
    token: str = field(default_factory=lambda: f"exportjobs-end-{uuid.uuid4().hex[:16]}")

    def row(self) -> str:
        cell = self.quote + self.token + self.quote
        return self.delimiter.join([cell] * self.columns) + "\n"

    def is_row(self, values: list[str | None]) -> bool:
        return all(value == self.token for value in values)


def _encoder(encoding: str) -> codecs.IncrementalEncoder:
    encoder = codecs.getincrementalencoder("utf-8" if encoding == "utf8" else encoding)()
    encoder.encode("")  # a byte-order mark, if the codec writes one, goes here
    return encoder


class ParserInput(io.RawIOBase):
    """The head already read, then the rest of `source`, then the end marker's row (after a line
    end, if the input's last line has none).

    The line of a quote left open is found from the input's line feeds, counted only then: by
    reading the source again (`may_reread`: the first read only, so an export still reads its
    source at most twice), or as a pipe counted them while being read.
    """

    def __init__(
        self,
        head: bytes,
        source: ByteSource,
        *,
        marker: EndMarker,
        encoding: str,
        may_reread: bool = True,
    ) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._source = source
        self.marker = marker
        encoder = _encoder(encoding)
        self._newline = encoder.encode("\n")
        self._marker_row = encoder.encode(marker.row())
        self._last = b""
        self._ended = False
        self.total = 0
        self._newlines: int | None = None
        self._may_reread = may_reread
        self.added_newline = False
        """Whether a line end was added after the input (its last line had none)."""
        self.swallowed_row: str | None = None
        """The text of a row of the wrong width that swallowed the marker's start (see
        `invalid_row`)."""

    @property
    def newlines(self) -> int | None:
        """Line feeds of the whole input (the header's included, the marker's not), for the
        line of an error at its end; None when they cannot be counted (ByteSource.count_newlines).
        """
        if self._newlines is None and self._may_reread:
            self._newlines = self._source.count_newlines()
        return self._newlines

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes | memoryview:
        if self._ended:
            return b""
        data: bytes | memoryview
        source = self._source
        if self._head:
            wanted = len(self._head) if size < 0 else size
            data = bytes(self._head[:wanted])
            self._head = self._head[len(data) :]
            if len(data) < wanted and source.size is None:
                # A pipe: only a short read of it tells its end.
                data += source.read(wanted - len(data))
                ended = len(data) < wanted
            else:
                # A short read is fine for the parser (a row it cuts is joined with the next
                # block), and the reads after it stay aligned with the source's downloads.
                ended = not self._head and self._source_read()
        else:
            data = source.read(size)
            ended = size < 0 or len(data) < size or self._source_read()
        if data:
            self.total += len(data)
            self._last = bytes(data[-4:])
        if ended:
            # The end goes with the last bytes, not in a block of its own: a last row spread
            # over three blocks would be refused as too long.
            self._ended = True
            data = bytes(data)
            if self._last and not self._last.endswith((self._newline, b"\r", b"\n")):
                data += self._newline
                self.added_newline = True
            data += self._marker_row
        return data

    def invalid_row(self, row: pacsv.InvalidRow) -> Literal["skip", "error"]:
        """pyarrow's `invalid_row_handler`: a row of the wrong width is an error, unless it holds
        the marker's token (a quote left open made it): then it is kept for the message, whole
        (pyarrow's own message cuts long rows), and skipped, so that the marker is missing."""
        if self.marker.token in row.text:
            self.swallowed_row = row.text
            return "skip"
        return "error"

    def _source_read(self) -> bool:
        """Whether every byte of a source of known size was read."""
        source = self._source
        return source.size is not None and source.bytes_read >= source.size


def open_quote_line(fields: list[str | None], parser_input: ParserInput) -> int | None:
    """The line where the quote of the last row's open field was opened.

    The open field is the one that swallowed the marker's first token; its text up to there ran
    from its opening quote to the end of the input.
    """
    if parser_input.swallowed_row is not None:
        return open_quote_line_in(parser_input.swallowed_row, parser_input)
    newlines = parser_input.newlines
    if newlines is None:
        return None
    token = parser_input.marker.token
    for value in fields:
        if value is not None and token in value:
            swallowed = value[: value.index(token)]
            inside = swallowed.count("\n") - (1 if parser_input.added_newline else 0)
            return newlines - inside + 1
    return newlines + 1


def open_quote_line_in(row_text: str, parser_input: ParserInput) -> int | None:
    """The same from the text of a row pyarrow refused (its error message quotes the row):
    None when the marker's token is not in it (another error, or the text was cut)."""
    marker = parser_input.marker
    end = row_text.find(marker.quote + marker.token)
    if end < 0:
        return None
    quote, delimiter = marker.quote, marker.delimiter
    opened: int | None = None
    index, field_start = 0, True
    while index < end:
        char = row_text[index]
        if opened is not None:
            if char == quote:
                if row_text[index + 1 : index + 2] == quote:
                    index += 1  # a doubled quote
                else:
                    opened = None
        elif field_start and char == quote:
            opened = index
        field_start = opened is None and char in (delimiter, "\n", "\r")
        index += 1
    newlines = parser_input.newlines
    if opened is None or newlines is None:
        return None
    inside = row_text[opened:end].count("\n") - (1 if parser_input.added_newline else 0)
    return newlines - inside + 1
