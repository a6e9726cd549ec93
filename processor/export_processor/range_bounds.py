"""Where a range of a split export starts and ends (ranges.py says what a range is): row
boundaries found in the bytes alone (`boundary_after`), the guessed start of a range
(`guess_start`, judged by `rows_fit`), and the bytes of one range cut at its end
(`RangeSource`, the end found by the quotes' parity or given).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from export_processor.errors import BadInputError, ExportError
from export_processor.source import ByteSource, Tally


def boundary_after(window: bytes, base: int, at_least: int, *, at_end: bool) -> int | None:
    """The first position >= `at_least` right after a line end in `window` (which holds the
    source's bytes from position `base`), or None. A `\\r` is a line end only when no `\\n`
    follows it; a `\\r` last in the window counts only `at_end` (nothing follows it)."""
    index = max(at_least - base - 1, 0)
    while True:
        newline = window.find(b"\n", index)
        carriage = window.find(b"\r", index, newline if newline >= 0 else len(window))
        if carriage < 0 and newline < 0:
            return None
        if carriage >= 0:
            after = carriage + 1
            if after == len(window) and not at_end:
                return None
            if after < len(window) and window[after : after + 1] == b"\n":
                index = after  # CRLF: its \n ends the line
                continue
            position = base + after
        else:
            position = base + newline + 1
        if position >= at_least:
            return position
        index = position - base


GUESS_ROWS = 32
"""Rows after a candidate start that must each have the columns' count for it to be guessed."""
GUESS_BYTES = 256 * 1024
"""At most this much after a candidate is decoded and parsed to judge it."""


def rows_fit(
    data: bytes, *, columns: int, delimiter: str, quote: str, encoding: str, whole: bool
) -> bool:
    """Whether the rows at the start of `data` look like rows: up to GUESS_ROWS of them parse
    (Python's csv module, strict) into `columns` fields each (a one-column file: any line).
    `whole`: `data` runs to the end of the source (its last row is complete)."""
    whole = whole and len(data) <= GUESS_BYTES
    text = data[:GUESS_BYTES].decode(encoding, errors="replace")
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines, delimiter=delimiter, quotechar=quote, strict=True)
    seen = 0
    try:
        for row in reader:
            if lines.tell() >= len(text) and not whole:
                break  # maybe cut
            if row and len(row) != columns:
                return False
            seen += 1
            if seen >= GUESS_ROWS:
                break
    except csv.Error:
        return lines.tell() >= len(text) and not whole
    return True


def guess_start(
    source: ByteSource,
    offset: int,
    *,
    limit: int,
    size: int,
    fits: Callable[[bytes, bool], bool] | None = None,
) -> int:
    """A position at or after `offset` right after a line end, as the bytes alone say: the first
    one after which the next rows fit (`fits(bytes, whole)`: the right count of fields), else
    the first one (a line end inside a quoted value can fool both: the finishing step then finds
    the range's start wrong and redoes it from the verified boundary). `size` when there is none
    within `limit` bytes."""
    if offset >= size:
        return size
    base = offset - 1
    window = source.read_at(base, limit + 2)
    whole = base + len(window) >= size
    first: int | None = None
    at_least = offset
    while (found := boundary_after(window, base, at_least, at_end=whole)) is not None:
        if first is None:
            first = found
        if fits is None or fits(window[found - base :], whole):
            return found
        at_least = found + 1
    return size if first is None else first


class RangeEndNotFound(BadInputError):  # noqa: N818 - an ExportError, named like the others
    """No row boundary within a parser block after the next range's offset (a row longer than a
    block, or quotes that parity cannot follow): the finishing step falls back to one pod."""


@dataclass(frozen=True)
class RangeCut:
    """Where a RangeSource's bytes start, and where they stop: the first position at or after
    `stop` right after a line end where the quotes (`quote`) read since `start` are even, within
    `limit` bytes after `stop` (`exact`: at `stop` itself, nothing counted; `stop` None: at the
    source's end)."""

    start: int
    stop: int | None
    quote: bytes
    limit: int
    exact: bool = False


class RangeSource(ByteSource):
    """The bytes of one range: `inner` (opened at the range's start), cut as `cut` says.

    Quotes are counted by `inner` as it reads (no copy); only the read that reaches the stop is
    examined byte by byte. The end is reported in `end` once found.
    """

    def __init__(self, inner: ByteSource, cut: RangeCut) -> None:
        super().__init__()
        self._inner = inner
        self._cut = cut
        self._position = cut.start
        self._last = b""
        self._own_error: ExportError | None = None
        self.end: int | None = None
        self.size = None  # the end is known only when reached
        if cut.stop is not None and not cut.exact:
            inner.quotes = Tally(cut.quote)
        if cut.stop is not None and cut.start >= cut.stop:
            self.end = cut.start  # an empty range: its start is at or after the next offset

    def read(self, size: int = -1) -> bytes | memoryview:
        self._check_cancelled()
        if self.end is not None:
            return b""
        cut, quotes = self._cut, self._inner.quotes
        parity = quotes.count % 2 if quotes is not None else 0
        data = self._inner.read(size)
        start = self._position
        if not data:
            self.end = start  # the source's end
            return data
        if cut.stop is None or start + len(data) < cut.stop:
            return self._handed(data)
        if cut.exact:
            self.end = cut.stop
            return self._handed(memoryview(data)[: cut.stop - start])
        # This read reaches the next offset: look for the end in it.
        raw = bytes(data)
        if start >= cut.stop and self._last == b"\r" and raw[:1] != b"\n" and not parity:
            self.end = start  # the \r that ended the previous read ended a line
            return b""
        checked, at_least = start, max(cut.stop, start)
        while (found := boundary_after(raw, start, at_least, at_end=False)) is not None:
            parity = (parity + raw.count(cut.quote, checked - start, found - start)) % 2
            checked = found
            if not parity:
                self.end = found
                return self._handed(memoryview(raw)[: found - start])
            at_least = found + 1
        if start + len(raw) > cut.stop + cut.limit:
            # Kept as the source's error: the parse error pyarrow then meets is not the cause.
            raise self._fail(
                RangeEndNotFound(
                    f"no row boundary within {cut.limit} bytes after offset {cut.stop}"
                )
            )
        return self._handed(raw)

    @property
    def error(self) -> ExportError | None:
        """This range's failure, or what the source under it reported."""
        return self._own_error or self._inner.error

    @error.setter
    def error(self, value: ExportError | None) -> None:
        self._own_error = value

    def reopen(self) -> RangeSource:
        return RangeSource(self._inner.reopen(), self._cut)

    @property
    def bytes_again(self) -> int:
        return self._inner.bytes_again

    @property
    def position(self) -> int:
        """Where the bytes handed out end: the range's end once the parser read them all."""
        return self._position

    def _handed(self, data: bytes | memoryview) -> bytes | memoryview:
        self._position += len(data)
        self.bytes_read += len(data)
        self._last = bytes(data[-1:]) if len(data) else self._last
        return data

    def consumed(self) -> None:
        self._inner.consumed()

    def limit_read_ahead(self, blocks: int) -> None:
        self._inner.limit_read_ahead(blocks)

    def cancel(self) -> None:
        self._inner.cancel()
        super().cancel()

    def close(self) -> None:
        self._inner.close()
        super().close()
