"""Issue 24: the termination message a hostile processor writes is read within the status's
bounds; each case that once left its export unfinished forever is a `ProtocolError`."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_operator.termination import ProtocolError, read_error, read_result

GOOD = {"uri": "s3://out/x/a.csv", "bytes": 10, "rows": 2, "sha256": "ab" * 32, "format": "csv"}


def test_a_good_result_and_error_are_read() -> None:
    result = read_result(json.dumps({**GOOD, "range": {"index": 0}}))
    assert result is not None and result.bytes == 10 and result.format == "csv"
    error = read_error(json.dumps({"error": {"code": "BAD_CSV", "message": "row 3"}}))
    assert error is not None and error.code == "BAD_CSV"
    assert read_result("not json, a log tail") is None and read_error("[1]") is None


@pytest.mark.parametrize(
    "text",
    [
        '{"uri": "s3://out/x/a.csv", "bytes": 1e999, "rows": 1, "sha256": "", "format": "csv"}',
        json.dumps({**GOOD, "uri": "s3://out/" + "k" * 2048}),
        json.dumps({**GOOD, "sha256": "a" * 65}),
        json.dumps({**GOOD, "bytes": 10**400}),
        json.dumps({**GOOD, "rows": -1}),
        json.dumps({**GOOD, "format": "xlsx"}),
        json.dumps({**GOOD, "bytes": True}),
    ],
    ids=["bytes-1e999", "uri-over-2048", "sha256-over-64", "bytes-400-digits", "rows-negative",
         "unknown-format", "bytes-bool"],
)  # fmt: skip
def test_malformed_results_are_protocol_errors(text: str) -> None:
    with pytest.raises(ProtocolError):
        read_result(text)


@pytest.mark.parametrize(
    "error",
    [{"code": "C" * 65}, {"code": "not a reason!"}, {"code": "X", "message": "m" * 5000},
     {"code": 7}, "BAD_CSV", {"code": "X", "retryable": "yes"}],
)  # fmt: skip
def test_malformed_errors_are_protocol_errors(error: object) -> None:
    with pytest.raises(ProtocolError):
        read_error(json.dumps({"error": error}))


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from([*list(GOOD), "error", "code"]), inner,
                                      max_size=6)))  # fmt: skip
def test_any_message_is_read_or_refused_never_raises_otherwise(value: object) -> None:
    text = json.dumps(value)
    for read in (read_result, read_error):
        with contextlib.suppress(ProtocolError):
            read(text)
