"""Request bodies per RFC 9110 and RFC 8259: JSON in UTF-8 only, gzip or no content coding, a key
given twice refused; every refusal a problem document."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.support.webhook_harness import AUTH, Harness, MakeHarness

BODY = {"source": "s3://exports-input/a.csv", "format": "csv"}


async def post_raw(h: Harness, data: bytes, **headers: str) -> tuple[int, str, dict[str, str]]:
    response = await h.client.post(
        "/v1/exports", data=data, headers={**AUTH, "Content-Type": "application/json", **headers}
    )
    return response.status, response.content_type, (await response.json())


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "iso-8859-1", "bogus"])
async def test_a_charset_other_than_utf8_is_415(harness: Harness, charset: str) -> None:
    status, kind, problem = await post_raw(
        harness,
        json.dumps(BODY).encode(),
        **{"Content-Type": f"application/json; charset={charset}"},
    )
    assert (status, kind, problem["code"]) == (
        415,
        "application/problem+json",
        "unsupported-media-type",
    )
    assert charset in problem["detail"]
    assert harness.store.create_calls == 0


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "utf8"])
async def test_utf8_charset_is_accepted(harness: Harness, charset: str) -> None:
    status, _, _ = await post_raw(
        harness,
        json.dumps(BODY).encode(),
        **{"Content-Type": f"application/json; charset={charset}"},
    )
    assert status == 202


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "deflate", "gzip, br", "rot13"])
async def test_an_unknown_content_coding_is_415_problem(harness: Harness, coding: str) -> None:
    response = await harness.client.post(
        "/v1/exports",
        data=json.dumps(BODY).encode(),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert response.status == 415
    assert response.content_type == "application/problem+json"
    assert "gzip" in response.headers["Accept-Encoding"]
    assert (await response.json())["code"] == "unsupported-media-type"
    assert harness.store.create_calls == 0


async def test_a_gzip_body_is_read(harness: Harness) -> None:
    status, _, body = await post_raw(
        harness, gzip.compress(json.dumps(BODY).encode()), **{"Content-Encoding": "gzip"}
    )
    assert status == 202, body


async def test_a_gzip_body_over_the_limit_once_decompressed_is_413(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(max_body_bytes=2048)
    padded = json.dumps({**BODY, "pad": " " * 100_000}).encode()
    status, _, problem = await post_raw(h, gzip.compress(padded), **{"Content-Encoding": "gzip"})
    assert (status, problem["code"]) == (413, "body-too-large")


async def test_a_body_that_is_not_gzip_is_400(harness: Harness) -> None:
    status, _, problem = await post_raw(harness, b"not gzip", **{"Content-Encoding": "gzip"})
    assert (status, problem["code"]) == (400, "malformed-json")


@pytest.mark.parametrize(
    "text",
    [
        '{"source": "s3://exports-input/a.csv", "format": "csv", "format": "parquet"}',
        '{"source": {"uri": "s3://exports-input/a.csv", "uri": "s3://other-bucket/b.csv"},'
        ' "format": "csv"}',
    ],
)
async def test_a_key_given_twice_is_refused(harness: Harness, text: str) -> None:
    status, kind, problem = await post_raw(harness, text.encode())
    assert (status, kind, problem["code"]) == (400, "application/problem+json", "malformed-json")
    assert "duplicate key" in problem["detail"]
    assert harness.store.create_calls == 0


async def test_sns_raw_delivery_with_a_bearer_token_is_accepted(harness: Harness) -> None:
    """Raw delivery posts the S3 event itself with SNS's headers; the route's docstring has
    always said it is accepted by token."""
    from tests.support import strategies

    response = await harness.client.post(
        "/v1/events/s3?format=csv",
        data=json.dumps(strategies.s3_event("exports-input", "raw.csv")),
        headers={
            **AUTH,
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-rawdelivery": "true",
        },
    )
    assert response.status == 202, await response.text()
    assert harness.store.create_calls == 1
