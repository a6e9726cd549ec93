"""The lean HTTP/1.1 client of the API server calls (export_operator.kube_http): any body, framed
by length or chunks and arriving in any pieces, is read whole; garbage is a ProtocolError, never
another exception; connections are reused only when the answer left them in step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client

from export_operator.kube import KubeClient, KubeError
from export_operator.kube_http import Answer, KubeHttp, ProtocolError, _Connection


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def _framed(body: bytes, chunks: list[int] | None, *, status: int = 200) -> bytes:
    head = f"HTTP/1.1 {status} Some Reason\r\nContent-Type: application/json\r\n"
    if chunks is None:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    wire, rest = b"", body
    for size in chunks:
        piece, rest = rest[:size], rest[size:]
        if piece:
            wire += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    if rest:
        wire += f"{len(rest):X}\r\n".encode() + rest + b"\r\n"
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + wire + b"0\r\nX-T: 1\r\n\r\n"


async def _feed(pieces: list[bytes]) -> tuple[_Connection, asyncio.Future[Answer]]:
    connection = _Connection()
    connection.connection_made(_Transport())
    waiter = connection.send(b"GET / HTTP/1.1\r\n\r\n")
    for piece in pieces:
        connection.data_received(piece)
    return connection, waiter


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = zip([0, *points], [*points, len(wire)], strict=True)
    return [wire[a:b] for a, b in pieces if b > a]  # a transport never hands over b""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=3000),
    chunks=st.none() | st.lists(st.integers(1, 700), max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    status=st.sampled_from([200, 201, 404, 409, 500]),
)
async def test_any_body_in_any_pieces_is_read_whole(
    body: bytes, chunks: list[int] | None, cuts: list[int], status: int
) -> None:
    connection, waiter = await _feed(_split(_framed(body, chunks, status=status), cuts))
    assert waiter.done()
    assert waiter.result() == Answer(status, "Some Reason", body)
    assert connection.keep_alive


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    garbage=st.binary(max_size=300)
    | st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        ),
        st.binary(max_size=200),
    ),
    cuts=st.lists(st.integers(0, 500), max_size=4),
)
async def test_garbage_is_a_protocol_error_or_waits_for_more(
    garbage: bytes, cuts: list[int]
) -> None:
    connection, waiter = await _feed(_split(garbage, cuts))
    if waiter.done() and waiter.exception() is not None:
        assert isinstance(waiter.exception(), ProtocolError)
        assert not connection.keep_alive
    connection.connection_lost(None)  # the server hangs up: whatever was pending ends
    assert waiter.done()
    assert waiter.exception() is None or isinstance(waiter.exception(), OSError)


async def test_a_body_until_close_and_connection_close_are_not_reused() -> None:
    connection, waiter = await _feed([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}"])
    assert not waiter.done()
    connection.connection_lost(None)
    assert waiter.result() == Answer(200, "OK", b"{}") and not connection.keep_alive


async def test_bytes_nobody_asked_for_close_the_connection() -> None:
    connection, waiter = await _feed([b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert waiter.result().status == 204 and connection.keep_alive
    connection.data_received(b"HTTP/1.1 200 OK\r\n")
    assert not connection.keep_alive and connection.transport is not None
    assert connection.transport.is_closing()


@pytest.fixture
async def server(aiohttp_server: Any) -> AsyncIterator[tuple[KubeClient, list[Any]]]:
    peers: list[Any] = []

    async def chunked(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"items": [', b'"a", ', b'"b"]}'):
            await response.write(part)
        await response.write_eof()
        return response

    async def closing(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response(dict(request.query), headers={"Connection": "close"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/closing", closing)
    app.router.add_get("/slow", slow)
    srv = await aiohttp_server(app)
    config = client.Configuration(host=str(srv.make_url("")).rstrip("/"))
    kube = KubeClient(client.ApiClient(configuration=config), timeout=5)
    assert isinstance(kube._http, KubeHttp)
    try:
        yield kube, peers
    finally:
        await kube.close()


async def test_chunked_answers_are_read_and_the_connection_reused(
    server: tuple[KubeClient, list[Any]],
) -> None:
    kube, peers = server
    for _ in range(3):
        assert await kube.get("/chunked") == {"items": ["a", "b"]}
    assert len(set(peers)) == 1


async def test_connection_close_opens_a_new_connection(
    server: tuple[KubeClient, list[Any]],
) -> None:
    kube, peers = server
    query = {"labelSelector": "a=b,c", "continue": "x y&z"}
    assert await kube.get("/closing", params=query) == query
    assert await kube.get("/closing") == {}
    assert len(set(peers)) == 2


async def test_a_call_past_its_time_is_status_zero_and_its_connection_dropped(
    server: tuple[KubeClient, list[Any]],
) -> None:
    kube, _ = server
    with pytest.raises(KubeError) as caught:
        await kube.get("/slow", within=0.2)
    assert caught.value.status == 0 and caught.value.reason == "TimeoutError"
    assert kube._http is not None and not kube._http._idle
    assert await kube.get("/chunked") == {"items": ["a", "b"]}


async def test_a_proxy_keeps_calls_on_the_session() -> None:
    config = client.Configuration(host="https://10.0.0.1:6443")
    config.proxy = "http://proxy:3128"
    kube = KubeClient(client.ApiClient(configuration=config))
    assert kube._http is None
    await kube.close()
