"""hack/s3_faults.py (the S3 fault proxy of the cluster tier) without S3: which operation a
request is, rules refused with a 400 (never a 5xx) when malformed, and each fault's answer, in
front of a small upstream that stands for the S3 server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.hack_modules import load

faults = load("s3_faults")

BODY = bytes(range(256)) * 64  # 16 KiB


@pytest.mark.parametrize(
    ("method", "path", "query", "op"),
    [
        ("GET", "/b/k.csv", {}, "GetObject"),
        ("HEAD", "/b/dir/k.csv", {}, "HeadObject"),
        ("PUT", "/b/k", {}, "PutObject"),
        ("PUT", "/b/k", {"partNumber": "1", "uploadId": "u"}, "UploadPart"),
        ("POST", "/b/k", {"uploads": ""}, "CreateMultipartUpload"),
        ("POST", "/b/k", {"uploadId": "u"}, "CompleteMultipartUpload"),
        ("DELETE", "/b/k", {"uploadId": "u"}, "AbortMultipartUpload"),
        ("GET", "/b", {"uploads": ""}, "ListMultipartUploads"),
        ("GET", "/b/k", {"uploadId": "u"}, "Other"),  # ListParts
        ("GET", "/b", {"list-type": "2"}, "Other"),
        ("PUT", "/b", {}, "Other"),
    ],
)
def test_operations(method: str, path: str, query: dict[str, str], op: str) -> None:
    assert faults.operation(method, path, query) == op


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
rule_like = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from([*faults.OPERATIONS, "*", "Nope"]) | json_values,
        "fault": st.sampled_from([*faults.FAULTS, "Nope"]) | json_values,
        "probability": st.floats(-1, 2) | json_values,
        "times": st.integers(-2, 5) | json_values,
        "delay": st.floats(-1, 3) | json_values,
        "forward": json_values,
        "fraction": st.floats(-1, 2) | json_values,
        "seed": st.integers() | json_values,
        "other": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(raw=rule_like | json_values)
def test_a_rule_parses_or_is_refused_with_a_value_error(raw: Any) -> None:
    try:
        rule = faults.Rule.parse(raw)
    except (ValueError, TypeError, OverflowError):
        return
    assert rule.op in (*faults.OPERATIONS, "*")
    assert rule.fault in faults.FAULTS
    assert 0 <= rule.probability <= 1 and 0 <= rule.fraction < 1 and rule.delay >= 0


async def _upstream(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":
        return web.Response(headers={"Content-Length": str(len(BODY)), "ETag": '"e"'})
    if request.method == "POST":
        await request.read()
        return web.Response(text="<CompleteMultipartUploadResult/>")
    return web.Response(body=BODY, headers={"ETag": '"e"'})


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, Any]]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _upstream)
    upstream = TestServer(app)
    await upstream.start_server()
    fault_proxy = faults.FaultProxy(str(upstream.make_url("")))
    front = TestServer(fault_proxy.app())
    await front.start_server()
    try:
        yield str(front.make_url("")).rstrip("/"), fault_proxy
    finally:
        await front.close()
        await upstream.close()


async def _put_rules(session: aiohttp.ClientSession, url: str, rules: Any) -> int:
    async with session.put(f"{url}/__faults__", data=json.dumps(rules)) as response:
        await response.read()
        return response.status


async def test_malformed_rules_are_a_400(proxy: tuple[str, Any]) -> None:
    url, _ = proxy
    async with aiohttp.ClientSession() as session:
        for body in ([{"op": "GetObject"}], {"op": "*"}, [{"op": "*", "fault": "x"}], "nope"):
            assert await _put_rules(session, url, body) == 400
        async with session.put(f"{url}/__faults__", data=b"\xff{") as response:
            assert response.status == 400
        async with session.post(f"{url}/__faults__") as response:
            assert response.status == 405


@pytest.mark.parametrize(
    ("code", "status"), [("SlowDown", 503), ("InternalError", 500), ("RequestTimeout", 400)]
)
async def test_errors_carry_s3_xml_bodies(proxy: tuple[str, Any], code: str, status: int) -> None:
    url, fault_proxy = proxy
    async with aiohttp.ClientSession() as session:
        assert (
            await _put_rules(session, url, [{"op": "GetObject", "fault": code, "times": 1}]) == 200
        )
        async with session.get(f"{url}/b/k") as response:
            assert response.status == status
            text = await response.text()
            assert f"<Code>{code}</Code>" in text and "<Resource>/b/k</Resource>" in text
        async with session.head(f"{url}/b/k") as response:  # another operation: untouched
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(BODY))
        async with session.get(f"{url}/b/k") as response:  # `times` spent
            assert await response.read() == BODY
    assert fault_proxy.counters()["faults"] == {f"GetObject:{code}": 1}


async def test_forward_then_error(proxy: tuple[str, Any]) -> None:
    url, fault_proxy = proxy
    rule = {"op": "CompleteMultipartUpload", "fault": "InternalError", "forward": True}
    async with aiohttp.ClientSession() as session:
        assert await _put_rules(session, url, [rule]) == 200
        async with session.post(f"{url}/b/k?uploadId=u", data=b"<parts/>") as response:
            assert response.status == 500
    assert fault_proxy.counters()["requests"] == {"CompleteMultipartUpload": 1}


@pytest.mark.parametrize("cut", ["reset", "short"])
async def test_a_cut_body_ends_before_its_content_length(proxy: tuple[str, Any], cut: str) -> None:
    url, fault_proxy = proxy
    async with aiohttp.ClientSession() as session:
        rule = {"op": "GetObject", "fault": cut, "fraction": 0.25, "times": 1}
        assert await _put_rules(session, url, [rule]) == 200
        async with session.get(f"{url}/b/k") as response:
            assert response.headers["Content-Length"] == str(len(BODY))
            got = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_any():
                    got += chunk
        assert 0 < len(got) <= len(BODY) // 4
    assert fault_proxy.counters()["cutBytes"] == len(BODY) // 4
