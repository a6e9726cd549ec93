"""JSON for the hot paths that only read what the API server wrote and write what we built:
orjson (several times faster than the standard library, docs/benchmarks.md "Webhook"), with
the standard library's answer wherever orjson would differ.

Not for client input: request bodies keep `json` (duplicate keys are refused there, which orjson
cannot tell). What orjson refuses and `json` accepts (NaN, integers beyond 64 bits to encode,
lone surrogates) goes through `json`, so results and errors are the standard library's.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Decode JSON text. Integers beyond 64 bits, which orjson would turn into floats, cannot
    come from the API server (it stores int64 or float64)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # the standard library's result, or its error


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII as UTF-8 rather than escaped)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a surrogate, a non-str key
        return json.dumps(value, separators=(",", ":")).encode()


def dumps_kept(value: Any) -> bytes:
    """`dumps` for bytes kept for long (a cache): orjson's result holds at least 4 KiB however
    short the JSON is; this is an exact-size copy."""
    return memoryview(dumps(value)).tobytes()
