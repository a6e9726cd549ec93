"""What the CSV parser reads, and the end-of-input check pyarrow does not make.

`ParserInput` replays the probed head, then continues with the source; it counts newlines and
keeps the last few reads, so that after the parser's last row the converter can tell whether
the input ended inside a quoted field. pyarrow accepts a quote still open at end of input and
makes everything after it one value of the last row (rows lost, success reported):
`quote_left_open` recognises that case from the last value and the raw tail.
"""

from __future__ import annotations

import codecs
import collections
import io

from export_processor.source import ByteSource

TAIL_READS = 3
"""Reads kept for the end-of-input check. A row is never longer than one parser block (the
parser refuses longer ones), so a value open at the end starts within the last two reads."""


class ParserInput(io.RawIOBase):
    """The head read for probing, then the rest of `source`; counts newlines, keeps the tail.

    An input whose last line has no line end gets one (`newline`, in the input's encoding):
    pyarrow does not take a last line without one as the header it skips.
    """

    def __init__(
        self, head: bytes, source: ByteSource, *, newline: bytes = b"\n", lines_before: int = 0
    ) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._source = source
        self._newline: bytes | None = newline
        self._tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_READS)
        self.total = 0
        self.newlines = lines_before
        """Line feeds read so far, counting those of the header the parser does not see."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            wanted = len(self._head) if size < 0 else size
            data = bytes(self._head[:wanted])
            self._head = self._head[len(data) :]
            if len(data) < wanted:
                data += self._source.read(wanted - len(data))
        else:
            data = self._source.read(size)
        if self._newline is not None and self._at_end(data, size):
            # The line end goes with the last bytes, not in a block of its own: a last row
            # spread over three blocks would be refused as too long.
            last = data or (self._tail[-1] if self._tail else b"")
            if last and not last.endswith((self._newline, b"\r", b"\n")):
                data += self._newline
            self._newline = None
        if data:
            self.total += len(data)
            self.newlines += data.count(b"\n")
            self._tail.append(data)
        return data

    def _at_end(self, data: bytes, size: int) -> bool:
        if self._head:
            return False
        if size < 0 or len(data) < size:
            return True
        source = self._source
        return source.size is not None and source.bytes_read >= source.size

    def tail(self) -> tuple[bytes, bool]:
        """The last bytes read, and whether they are the whole input."""
        tail = b"".join(self._tail)
        return tail, len(tail) == self.total


def encoded_newline(encoding: str) -> bytes:
    """A line feed in the input's encoding (without a byte-order mark)."""
    return _encoder("utf-8" if encoding == "utf8" else encoding).encode("\n")


def _encoder(encoding: str) -> codecs.IncrementalEncoder:
    encoder = codecs.getincrementalencoder(encoding)()
    encoder.encode("")  # a byte-order mark, if the codec writes one, goes here
    return encoder


def quote_left_open(
    last_value: str | None,
    parser_input: ParserInput,
    *,
    quote: str,
    delimiter: str,
    encoding: str,
) -> int | None:
    """The line where a quote still open at end of input was opened, or None if none is.

    The last value of the last row was parsed from an open quoted field exactly when the raw
    input ends with the quote and that value (its quotes doubled back), and the quote starts a
    field (it follows a delimiter, a line end or the start of the input).
    """
    if last_value is None:
        return None
    tail, whole = parser_input.tail()
    try:
        encoder = _encoder("utf-8" if encoding == "utf8" else encoding)
        raw = encoder.encode(quote + last_value.replace(quote, quote + quote))
        starts = tuple(encoder.encode(c) for c in (delimiter, "\n", "\r"))
    except (UnicodeError, LookupError):
        return None
    if not tail.endswith(raw):
        return None
    before = tail[: len(tail) - len(raw)]
    at_start = whole and before in (b"", codecs.BOM_UTF8)
    if not at_start and not before.endswith(starts):
        return None
    return parser_input.newlines - last_value.count("\n") + 1
