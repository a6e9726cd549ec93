"""Arrow record batches to JSON Lines, column-wise with Arrow compute kernels (no per-row Python).

Each column becomes an array of JSON value texts (strings escaped, numbers as written by Arrow,
null as `null`); one element-wise join per batch glues them into `{"name":value,...}\\n` rows
whose bytes are contiguous in the result's data buffer. A text column without nulls is not
quoted on its own: its quotes go into the literal pieces of that join (one copy less).

Escaping looks at the bytes of the whole column at once (`in`, which is memchr, and one
`bytes.translate` for control characters), and then replaces, over the whole column, only the
characters actually present: most columns need no escaping and cost one scan.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as _compute

from export_processor.column_types import JSON_LITERAL

# The compute stubs type these kernels narrower than they behave (scalars broadcast, str
# literals accepted); the module is checked through its tests instead.
pc: Any = _compute

_SIMPLE_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}
_NOT_CONTROL = bytes(range(0x20, 0x100))
_NULL = pa.scalar("null")


def _value_bytes(strings: Any) -> bytes:
    """The bytes of all values of a string array (null slots' bytes too, if any), one copy."""
    offsets_buffer, data = strings.buffers()[1:3]
    if data is None or offsets_buffer is None or len(strings) == 0:
        return b""
    offsets_type = "q" if pa.types.is_large_string(strings.type) else "i"
    offsets: Any = memoryview(offsets_buffer).cast("B").cast(offsets_type)  # type: ignore[call-overload]
    start = offsets[strings.offset]
    end = offsets[strings.offset + len(strings)]
    values: bytes = data.slice(start, end - start).to_pybytes()
    return values


def _escape(strings: Any) -> Any:
    """JSON string escaping (no quotes added); a column that needs none is returned as is."""
    data = _value_bytes(strings)
    controls = data.translate(None, _NOT_CONTROL)
    # Backslashes first: the escapes added after this bring their own.
    if b"\\" in data:
        strings = pc.replace_substring(strings, "\\", "\\\\")
    if b'"' in data:
        strings = pc.replace_substring(strings, '"', '\\"')
    for code in sorted(set(controls)):
        escaped = _SIMPLE_ESCAPES.get(code, f"\\u{code:04x}")
        strings = pc.replace_substring(strings, chr(code), escaped)
    return strings


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _json_values(column: Any, *, literal: bool = False) -> tuple[Any, bool]:
    """The JSON text of each value of one column (no nulls in the result), and whether the
    values still need their quotes around them (text without nulls: quoted by the caller).
    A `literal` column is text that is already JSON (numbers, booleans: column_types)."""
    kind = column.type
    if literal:
        return (column if column.null_count == 0 else pc.fill_null(column, _NULL)), False
    if _is_text(kind):
        text = _escape(column)
        if column.null_count == 0:
            return text, True
        text = pc.binary_join_element_wise('"', text, '"', "")
    elif pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        text = pc.if_else(finite, pc.cast(column, pa.string()), pa.scalar(None, pa.string()))
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_null(kind):
        return pa.array(["null"] * len(column), pa.string()), False
    else:  # dates, times, timestamps, decimals: their text form, quoted
        text = _escape(pc.cast(column, pa.string()))
        if text.null_count == 0:
            return text, True
        text = pc.binary_join_element_wise('"', text, '"', "")
    return pc.fill_null(text, _NULL), False


class JsonLinesEncoder:
    """Encodes batches of one schema; the key texts are escaped once.

    `encode` keeps no state between calls, so batches may be encoded on several threads.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self._keys = [json.dumps(name, ensure_ascii=False) for name in schema.names]
        self._literal = [field.metadata == JSON_LITERAL for field in schema]

    def encode(self, batch: pa.RecordBatch) -> pa.Buffer:
        """The JSON Lines bytes of `batch` (empty buffer for no rows)."""
        if batch.num_rows == 0:
            return pa.py_buffer(b"")
        pieces: list[Any] = []
        literal = ""
        for index, key in enumerate(self._keys):
            values, quoted_by_join = _json_values(batch.column(index), literal=self._literal[index])
            literal += ("{" if index == 0 else ",") + key + ":" + ('"' if quoted_by_join else "")
            pieces += [literal, values]
            literal = '"' if quoted_by_join else ""
        pieces.append(literal + "}\n")
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
