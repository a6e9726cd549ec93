"""The first row of the input: the column names (or the column count), and where the data starts.

Read with Python's csv module from the first block, so that the parser is then started exactly
after the header (pyarrow's `skip_rows` counts an empty line before the header as the header, and
its reader fails on a block cut mid-row).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from export_processor.errors import BadInputError

csv.field_size_limit(1 << 30)


@dataclass(frozen=True)
class FirstRow:
    fields: list[str]
    end: int
    """Bytes of the input up to and including the row's line end (and any empty lines before)."""


class _Lines:
    """Lines of a text (line ends kept, as csv wants them), counting the characters handed out."""

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text, newline="")
        self.consumed = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.consumed += len(line)
        return line


def _decode(head: bytes, encoding: str, *, whole: bool) -> tuple[str, int]:
    """The longest decodable text at the start of `head` (after a UTF-8 BOM), and the BOM's
    length in bytes."""
    bom = 0
    if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8):
        bom = len(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        return decoder.decode(head[bom:], final=whole), bom
    except UnicodeDecodeError as exc:
        return head[bom : bom + exc.start].decode(encoding), bom


def first_row(
    head: bytes, *, whole: bool, encoding: str, delimiter: str, quote: str
) -> FirstRow | None:
    """The first non-empty row of `head`, or None if `head` may end inside it.

    Args:
        head: the first bytes of the input.
        whole: whether `head` is the whole input.

    Raises:
        BadInputError: the row is malformed (a quote never closed, invalid encoding).
    """
    encoding = codecs.lookup(encoding).name
    encoding = "utf-8" if encoding == "utf-8-sig" else encoding
    text, bom = _decode(head, encoding, whole=whole)
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter, quotechar=quote, doublequote=True, strict=True)
    try:
        for row in reader:
            if not row:
                continue  # an empty line
            # At the end of a partial head the row may go on, or a "\r" be followed by a "\n".
            if lines.consumed >= len(text) and not whole and not text.endswith("\n"):
                return None
            end = bom + len(text[: lines.consumed].encode(encoding))
            return FirstRow(fields=row, end=end)
    except csv.Error as exc:
        if lines.consumed >= len(text):
            if not whole:
                return None  # cut mid-row (in a quoted value)
            raise BadInputError("a quote opened in the first row is never closed") from None
        raise BadInputError(f"the first row is malformed: {exc}") from None
    if len(text) < len(head) - bom:
        raise BadInputError(f"the first row is not valid {encoding}")
    return None if not whole else FirstRow(fields=[], end=len(head))
