"""What a CSV the parser refused is told as: pyarrow's messages turned into BAD_CSV errors that
name the problem (a row too long, a quote never closed, the first line of the refusal)."""

from __future__ import annotations

import re

import pyarrow as pa

from export_processor.errors import BadInputError, ExportError
from export_processor.parser_input import ParserInput, open_quote_line_in

_STRADDLING = "straddling object straddles two block boundaries"
_ROW_IN_ERROR = re.compile(r"Expected \d+ columns, got \d+: ")


def classify(
    exc: pa.ArrowInvalid,
    *,
    rows: int,
    source_error: ExportError | None,
    block_size: int,
    parser_input: ParserInput | None,
) -> ExportError:
    """A parse error as BAD_CSV, unless the source failed first (`source_error`: its
    failure reached pyarrow as a parse error)."""
    if source_error is not None:
        return source_error
    text = str(exc).strip()
    if _STRADDLING in text:
        return BadInputError(too_long(block_size))
    if text == "Empty CSV file":
        return BadInputError("the source is empty: no header and no rows")
    if parser_input is not None and parser_input.marker.token in text:
        # The end marker is in the refused row: a quote left open swallowed its start.
        row_text = _ROW_IN_ERROR.split(text, maxsplit=1)[-1]
        return BadInputError(never_closed(open_quote_line_in(row_text, parser_input)))
    where = f" (after row {rows})" if rows else ""
    return BadInputError(f"{_first_line(text)}{where}")


def never_closed(line: int | None) -> str:
    where = f" on line {line}" if line is not None else " in the last row"
    return (
        f"a quote opened{where} is never closed: the rest of the input would have become one value"
    )


def too_long(limit: int) -> str:
    return (
        f"a row is longer than {limit} bytes (EXPORTJOBS_BLOCK_SIZE_BYTES), or a quote is "
        "never closed"
    )


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else "invalid CSV"
    return line[:500]
