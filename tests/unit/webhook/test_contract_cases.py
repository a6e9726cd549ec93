"""Requests that once got a 202 and then failed at run time (issue 12) now get a 422 problem that
says what is wrong, and create nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import strategies
from tests.support.webhook_harness import AUTH, Harness

SOURCE = "s3://exports-input/data/a.csv"


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"csv": {"delimiter": "\n"}}, "invalid-request", "csv.delimiter"),
        ({"csv": {"delimiter": "\r"}}, "invalid-request", "printable ASCII"),
        ({"csv": {"delimiter": "✓"}}, "invalid-request", "printable ASCII"),
        ({"csv": {"delimiter": "😀"}}, "invalid-request", "printable ASCII"),
        ({"csv": {"delimiter": "\u0000"}}, "invalid-request", "printable ASCII"),
        ({"csv": {"quote": "\n"}}, "invalid-request", "csv.quote"),
        ({"csv": {"delimiter": '"'}}, "invalid-request", "must differ"),
        ({"csv": {"encoding": "utf-16"}}, "invalid-request", "not a supported encoding"),
        ({"csv": {"encoding": "rot13"}}, "invalid-request", "not a supported encoding"),
        ({"csv": {"encoding": "bogus-enc"}}, "invalid-request", "not a supported encoding"),
        ({"csv": {"encoding": "x" * 33}}, "invalid-request", "csv.encoding"),
        ({"source": "s3://192.168.1.1/a.csv"}, "invalid-s3-uri", "IP address"),
        ({"source": "s3://my.-bucket/a.csv"}, "invalid-s3-uri", "bucket name"),
        ({"source": "s3://my-.bucket/a.csv"}, "invalid-s3-uri", "bucket name"),
        ({"source": "s3://a..b/a.csv"}, "invalid-s3-uri", "bucket name"),
        ({"source": "s3://exports-input/a/../b.csv"}, "invalid-s3-key", "'..'"),
        ({"source": "s3://exports-input/../b.csv"}, "invalid-s3-key", "'..'"),
        ({"source": "s3://exports-input/a//b.csv"}, "invalid-s3-key", "'//'"),
        ({"source": "s3://exports-input/./b.csv"}, "invalid-s3-key", "'.'"),
        ({"destination": "s3://exports-output/a//"}, "invalid-s3-key", "'//'"),
        ({"destination": "s3://exports-output/../"}, "invalid-s3-key", "'..'"),
        ({"destination": "s3://192.168.1.1/out/"}, "invalid-s3-uri", "IP address"),
        ({"source": {"uri": SOURCE, "version_id": "v\x00"}}, "invalid-request", "version_id"),
    ],
)
async def test_requests_that_cannot_run_are_422_with_a_clear_problem(
    harness: Harness, change: dict[str, Any], code: str, words: str
) -> None:
    body = {"source": SOURCE, "format": "csv", **change}
    response = await harness.client.post("/v1/exports", json=body, headers=AUTH)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["code"] == code, problem
    assert words in problem["detail"], problem
    assert problem["errors"] and problem["errors"][0]["message"]
    assert harness.store.create_calls == 0


@pytest.mark.parametrize(
    ("bucket", "raw_key", "words"),
    [
        ("exports-input", "%FF%FE.csv", "does not decode as UTF-8"),
        ("exports-input", "a%2F%2Fb.csv", "'//'"),
        ("exports-input", "a/%2E%2E/b.csv", "'..'"),
        ("192.168.1.1", "a.csv", "IP address"),
        ("my.-bucket", "a.csv", "bucket name"),
    ],
)
async def test_events_that_cannot_run_are_422(
    harness: Harness, bucket: str, raw_key: str, words: str
) -> None:
    response = await harness.client.post(
        "/v1/events/s3?format=csv", json=strategies.s3_event(bucket, raw_key), headers=AUTH
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "invalid-s3-key", problem
    assert words in problem["detail"]
    assert harness.store.create_calls == 0


async def test_every_validation_error_is_listed(harness: Harness) -> None:
    body = {"source": SOURCE, "format": "csv", "csv": {"delimiter": "\n", "encoding": "rot13"}}
    problem = await (await harness.client.post("/v1/exports", json=body, headers=AUTH)).json()
    assert [e["field"] for e in problem["errors"]] == ["csv.delimiter", "csv.encoding"]
