"""The thin client against a small HTTP server: plain dicts both ways, the API server's Status
as KubeError, no answer as status 0, and connections reused when the answer is not parsed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from export_operator.kube import KubeClient, KubeError

PATH = "/apis/batch/v1/namespaces/ns/jobs"


@pytest.fixture
async def server(aiohttp_server: Any) -> AsyncIterator[tuple[KubeClient, list[Any]]]:
    seen: list[Any] = []

    async def jobs(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.transport.get_extra_info("peername"), body))
        if request.method == "POST" and body["metadata"]["name"] == "taken":
            status = {"kind": "Status", "reason": "AlreadyExists", "message": "taken exists"}
            return web.json_response(status, status=409)
        # A large answer (a created Job is a few KiB): not all of it arrives with the headers.
        return web.json_response({"metadata": {"name": "x"}, "echo": body, "pad": "x" * 2**20})

    app = web.Application()
    app.router.add_route("*", PATH, jobs)
    srv = await aiohttp_server(app)
    config = client.Configuration(host=str(srv.make_url("")).rstrip("/"))
    kube = KubeClient(client.ApiClient(configuration=config), timeout=5)
    try:
        yield kube, seen
    finally:
        await kube.close()


async def test_plain_dicts_both_ways(server: tuple[KubeClient, list[Any]]) -> None:
    kube, seen = server
    answer = await kube.create(PATH, {"metadata": {"name": "a"}})
    assert answer["echo"] == {"metadata": {"name": "a"}}
    assert await kube.create(PATH, {"metadata": {"name": "b"}}, read=False) == {}
    assert [s[2]["metadata"]["name"] for s in seen] == ["a", "b"]


async def test_the_status_of_an_error_is_a_kube_error(server: tuple[KubeClient, list[Any]]) -> None:
    kube, _ = server
    with pytest.raises(KubeError) as caught:
        await kube.create(PATH, {"metadata": {"name": "taken"}})
    assert (caught.value.status, caught.value.reason) == (409, "AlreadyExists")
    assert caught.value.message == "taken exists" and not caught.value.retryable
    with pytest.raises(KubeError) as missing:
        await kube.get("/api/v1/namespaces/ns/pods/none")
    assert missing.value.status == 404


async def test_no_answer_is_status_zero_and_retryable() -> None:
    config = client.Configuration(host="http://127.0.0.1:9")  # nothing listens there
    kube = KubeClient(client.ApiClient(configuration=config), timeout=2)
    try:
        with pytest.raises(KubeError) as caught:
            await kube.get(PATH)
        assert caught.value.status == 0 and caught.value.retryable
    finally:
        await kube.close()


async def test_an_unparsed_answer_leaves_the_connection_for_the_next_call(
    server: tuple[KubeClient, list[Any]],
) -> None:
    kube, seen = server
    for name in ("a", "b", "c"):
        await kube.create(PATH, {"metadata": {"name": name}}, read=False)
    assert len({peer for _, peer, _ in seen}) == 1, json.dumps([str(s[1]) for s in seen])
