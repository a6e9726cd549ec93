"""Arrow record batches to JSON Lines, column-wise with Arrow compute kernels (no per-row Python).

Each column becomes an array of JSON value texts (strings escaped and quoted, numbers as
written by Arrow, null as `null`); one element-wise join per batch glues them into
`{"name":value,...}\\n` rows whose bytes are contiguous in the result's data buffer.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as _compute

# The compute stubs type these kernels narrower than they behave (scalars broadcast, str
# literals accepted); the module is checked through its tests instead.
pc: Any = _compute

_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_CONTROL = r"[\x00-\x1f]"
_OTHER_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"
_SIMPLE_ESCAPES = (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f"))
_NULL = pa.scalar("null")


def _escape(strings: Any) -> Any:
    """JSON string escaping, applied only to the values that need it (one scan when none do)."""
    needs = pc.fill_null(pc.match_substring_regex(strings, _NEEDS_ESCAPE), False)
    if not pc.any(needs).as_py():
        return strings
    subset = pc.filter(strings, needs)
    # Backslash and quote in one pass: each gets a backslash in front.
    subset = pc.replace_substring_regex(subset, r'(["\\])', r"\\\1")
    if pc.any(pc.match_substring_regex(subset, _CONTROL)).as_py():
        for raw, escaped in _SIMPLE_ESCAPES:
            subset = pc.replace_substring(subset, raw, escaped)
        if pc.any(pc.match_substring_regex(subset, _OTHER_CONTROL)).as_py():
            for code in range(0x20):
                char = chr(code)
                if char not in "\n\r\t\b\f" and pc.any(pc.match_substring(subset, char)).as_py():
                    subset = pc.replace_substring(subset, char, f"\\u{code:04x}")
    return pc.replace_with_mask(strings, needs, subset)


def _json_values(column: Any) -> Any:
    """The JSON text of each value of one column (no nulls in the result)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.binary_join_element_wise('"', _escape(column), '"', "")
    elif pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        text = pc.if_else(finite, pc.cast(column, pa.string()), pa.scalar(None, pa.string()))
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_null(kind):
        return pa.array(["null"] * len(column), pa.string())
    else:  # dates, times, timestamps, decimals: their text form, quoted
        text = pc.binary_join_element_wise('"', _escape(pc.cast(column, pa.string())), '"', "")
    return pc.fill_null(text, _NULL)


class JsonLinesEncoder:
    """Encodes batches of one schema; the key texts are escaped once."""

    def __init__(self, schema: pa.Schema) -> None:
        self._keys = [json.dumps(name, ensure_ascii=False) for name in schema.names]

    def encode(self, batch: pa.RecordBatch) -> pa.Buffer:
        """The JSON Lines bytes of `batch` (empty buffer for no rows)."""
        if batch.num_rows == 0:
            return pa.py_buffer(b"")
        pieces: list[Any] = []
        for index, key in enumerate(self._keys):
            pieces.append(("{" if index == 0 else ",") + key + ":")
            pieces.append(_json_values(batch.column(index)))
        pieces.append("}\n")
        if not self._keys:
            pieces = ["{}\n", pa.array([""] * batch.num_rows)]
        lines = pc.binary_join_element_wise(*pieces, "")
        if not isinstance(lines, pa.Array):
            lines = pa.array([lines.as_py()] * batch.num_rows, pa.string())
        lines = lines.cast(pa.large_string()) if lines.nbytes > (1 << 30) else lines
        offsets_type = "q" if pa.types.is_large_string(lines.type) else "i"
        offsets: Any = memoryview(lines.buffers()[1]).cast("B").cast(offsets_type)  # type: ignore[call-overload]
        start = offsets[lines.offset]
        end = offsets[lines.offset + len(lines)]
        data = lines.buffers()[2]
        assert data is not None
        sliced: pa.Buffer = data.slice(start, end - start)
        return sliced
