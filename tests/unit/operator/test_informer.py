"""The informer against a small fake API server over real HTTP: paginated list, watch from the
list's resourceVersion, bookmarks, resuming a watch the server ended, a new list on 410 Gone (from
the answer or as an ERROR event), backoff on errors with the cache kept, and the pod index."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from export_operator.controller.snapshots import PodView
from export_operator.informer import Informer
from export_operator.kube import KubeClient, collection_path
from export_processor.common import Backoff
from tests.support.factories import pod_body

PATH = "/api/v1/namespaces/ns/pods"


def _pod(name: str, export: str, version: int, phase: str = "Pending") -> dict[str, Any]:
    body = pod_body(name, export_name=export, phase=phase)
    body["metadata"]["resourceVersion"] = str(version)
    body["metadata"]["uid"] = f"uid-{name}"
    return body


class FakeApi:
    """Serves `GET PATH` as list (pages of `page` objects) or watch; watches follow `script`:
    each entry is an HTTP status to answer with, or a list of events to stream before ending."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 10
        self.script: list[int | list[dict[str, Any]]] = []
        self.requests: list[dict[str, str]] = []
        self.page = 2
        self.bad_lists = 0
        """How many lists to answer with a body that is not a list (a misbehaving proxy)."""
        self.idle = asyncio.Event()
        """Set when a watch arrives with nothing left in the script (it then hangs)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(query)
        if query.get("watch") != "true":
            return self._list(query)
        if not self.script:
            self.idle.set()
            await asyncio.sleep(3600)
        step = self.script.pop(0)
        if isinstance(step, int):
            return web.json_response(
                {"kind": "Status", "code": step, "message": f"status {step}"}, status=step
            )
        response = web.StreamResponse()
        await response.prepare(request)
        for event in step:
            # Split each line in two writes: the informer must join chunks into lines.
            line = json.dumps(event).encode() + b"\n"
            await response.write(line[:7])
            await response.write(line[7:])
        await response.write_eof()
        return response

    def _list(self, query: Mapping[str, str]) -> web.Response:
        if self.bad_lists:
            self.bad_lists -= 1
            return web.json_response(["not", "a", "list"])
        names = sorted(self.objects)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or len(names))
        chunk = names[start : start + limit]
        more = start + limit < len(names)
        return web.json_response(
            {
                "metadata": {
                    "resourceVersion": str(self.version),
                    "continue": str(start + limit) if more else "",
                },
                "items": [self.objects[n] for n in chunk],
            }
        )


@pytest.fixture
async def fake(aiohttp_server: Any) -> AsyncIterator[tuple[FakeApi, KubeClient]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_get(PATH, fake.handle)
    server = await aiohttp_server(app)
    config = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    api = KubeClient(client.ApiClient(configuration=config))
    try:
        yield fake, api
    finally:
        await api.close()


Seen = list[tuple[str | None, str]]


def _informer(
    api: KubeClient, fake: FakeApi, retry: Backoff | None = None
) -> tuple[Informer[PodView], Seen]:
    informer: Informer[PodView] = Informer(
        api=api,
        path=PATH,
        decode=PodView.from_body,
        label_selector="exportjobs.dev/export",
        index_by=lambda p: (p.namespace, p.export_name),
        page_size=fake.page,
        retry=retry or Backoff(base=0.01, cap=0.02),
    )
    seen: Seen = []
    informer.listeners.append(lambda t, view, old, body: seen.append((t, view.name)))
    return informer, seen


async def _run_until_idle(informer: Informer[Any], fake: FakeApi) -> None:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(fake.idle.wait(), 5)
    finally:
        await _stop(task)


async def test_lists_in_pages_then_watches_from_the_lists_version(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    for i in range(5):
        api_fake.objects[f"p{i}"] = _pod(f"p{i}", "e1" if i < 3 else "e2", i + 1)
    api_fake.script = [
        [
            {"type": "ADDED", "object": _pod("p5", "e2", 11)},
            {"type": "MODIFIED", "object": _pod("p0", "e1", 12, phase="Running")},
            {"type": "DELETED", "object": _pod("p1", "e1", 13)},
        ]
    ]
    informer, seen = _informer(api, api_fake)
    await _run_until_idle(informer, api_fake)

    lists = [r for r in api_fake.requests if "watch" not in r]
    assert [r.get("continue", "") for r in lists] == ["", "2", "4"], "three pages of two"
    assert all(r["labelSelector"] == "exportjobs.dev/export" for r in api_fake.requests)
    watches = [r for r in api_fake.requests if "watch" in r]
    assert watches[0]["resourceVersion"] == "10"
    assert watches[0]["allowWatchBookmarks"] == "true"
    assert watches[1]["resourceVersion"] == "13", "resumed from the last event, no new list"
    assert informer.lists == 1
    assert seen[:5] == [(None, f"p{i}") for i in range(5)]
    assert seen[5:] == [("ADDED", "p5"), ("MODIFIED", "p0"), ("DELETED", "p1")]
    assert sorted(informer.items) == [("ns", n) for n in ("p0", "p2", "p3", "p4", "p5")]
    assert informer.items[("ns", "p0")].phase == "Running"
    assert sorted(p.name for p in informer.indexed(("ns", "e1"))) == ["p0", "p2"]
    assert sorted(p.name for p in informer.indexed(("ns", "e2"))) == ["p3", "p4", "p5"]


async def test_a_list_is_turned_into_views_page_by_page(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    """Each page's objects become views before the next page is asked for: the raw list of
    50,000 retained ExportJobs (~700 MB decoded) is never held at once, only one page of it."""
    api_fake, api = fake
    for i in range(6):
        api_fake.objects[f"p{i}"] = _pod(f"p{i}", "e1", i + 1)
    decoded_before_request: list[int] = []
    decoded: list[str] = []
    list_page = api_fake._list

    def counting(query: Mapping[str, str]) -> web.Response:
        decoded_before_request.append(len(decoded))
        return list_page(query)

    api_fake._list = counting  # type: ignore[method-assign]

    def decode(body: Mapping[str, Any]) -> PodView:
        decoded.append(body["metadata"]["name"])
        return PodView.from_body(body)

    informer: Informer[PodView] = Informer(api=api, path=PATH, decode=decode, page_size=2)
    bodies: list[Mapping[str, Any]] = []
    informer.listeners.append(lambda t, view, old, body: bodies.append(body))
    await informer.list_all()
    assert decoded_before_request == [0, 2, 4]
    assert len(informer.items) == 6
    assert bodies[0] == {"metadata": {"namespace": "ns", "name": "p0"}}


async def test_a_bookmark_moves_the_resource_version_without_an_event(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    api_fake.objects["p0"] = _pod("p0", "e1", 1)
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "57"}}}
    api_fake.script = [[bookmark]]
    informer, seen = _informer(api, api_fake)
    await _run_until_idle(informer, api_fake)
    watches = [r for r in api_fake.requests if "watch" in r]
    assert [w["resourceVersion"] for w in watches] == ["10", "57"]
    assert seen == [(None, "p0")], "a bookmark is not an event for the listeners"
    assert informer.lists == 1


@pytest.mark.parametrize("gone_as", ["event", "answer"])
async def test_410_gone_lists_again_and_reports_what_vanished_meanwhile(
    fake: tuple[FakeApi, KubeClient], gone_as: str
) -> None:
    api_fake, api = fake
    api_fake.objects = {n: _pod(n, "e1", 1) for n in ("p0", "p1")}
    informer, seen = _informer(api, api_fake)
    await informer.list_all()
    # While the watch was away: p1 deleted, p2 added, the store compacted.
    del api_fake.objects["p1"]
    api_fake.objects["p2"] = _pod("p2", "e1", 20)
    api_fake.version = 30
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    api_fake.script = [[gone] if gone_as == "event" else 410]
    await _run_until_idle(informer, api_fake)
    assert informer.lists == 2
    assert seen[2:] == [("DELETED", "p1"), (None, "p0"), (None, "p2")]
    assert sorted(informer.items) == [("ns", "p0"), ("ns", "p2")]
    assert informer.indexed(("ns", "e1")) == [
        informer.items[("ns", "p0")],
        informer.items[("ns", "p2")],
    ]
    watches = [r for r in api_fake.requests if "watch" in r]
    assert watches[-1]["resourceVersion"] == "30"


async def test_errors_are_retried_with_the_cache_kept(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    api_fake.objects["p0"] = _pod("p0", "e1", 1)
    api_fake.script = [
        503,
        [{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}],
        [{"type": "MODIFIED", "object": _pod("p0", "e1", 11, phase="Running")}],
    ]
    informer, seen = _informer(api, api_fake)
    await _run_until_idle(informer, api_fake)
    assert informer.lists == 1, "an error other than 410 resumes the watch, it does not list"
    watches = [r for r in api_fake.requests if "watch" in r]
    assert [w["resourceVersion"] for w in watches] == ["10", "10", "10", "11"]
    assert informer.items[("ns", "p0")].phase == "Running"
    assert seen == [(None, "p0"), ("MODIFIED", "p0")]


async def test_the_api_server_down_at_start_is_retried_until_it_lists(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    _, api = fake
    config = client.Configuration(host="http://127.0.0.1:9")  # nothing listens there
    down = KubeClient(client.ApiClient(configuration=config))
    try:
        informer: Informer[PodView] = Informer(
            api=down, path=PATH, decode=PodView.from_body, retry=Backoff(base=0.01, cap=0.02)
        )
        task = asyncio.create_task(informer.run())
        await asyncio.sleep(0.2)
        assert not informer.synced.is_set()
        assert not task.done(), "it keeps trying"
        informer.api = api  # the API server is back
        await asyncio.wait_for(informer.synced.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await down.close()


async def test_a_bad_object_or_a_failing_listener_does_not_stop_the_watch(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    broken = {"metadata": {"namespace": "ns", "resourceVersion": "11"}}  # no name
    api_fake.script = [
        [{"type": "ADDED", "object": broken}, {"type": "ADDED", "object": _pod("p1", "e1", 12)}]
    ]
    informer, seen = _informer(api, api_fake)

    def boom(*_: Any) -> None:
        raise RuntimeError("a bug in a listener")

    informer.listeners.insert(0, boom)
    await _run_until_idle(informer, api_fake)
    assert seen == [("ADDED", "p1")]
    assert list(informer.items) == [("ns", "p1")]
    assert informer.resource_version == "12"


def test_collection_paths() -> None:
    assert collection_path("v1", "pods") == "/api/v1/pods"
    assert collection_path("batch/v1", "jobs", "ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert (
        collection_path("exportjobs.dev/v1alpha1", "exportjobs", "x")
        == "/apis/exportjobs.dev/v1alpha1/namespaces/x/exportjobs"
    )


async def test_a_watch_that_ends_at_once_with_nothing_new_backs_off(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    api_fake.script = [[] for _ in range(50)]
    informer, _ = _informer(api, api_fake, retry=Backoff(base=0.2, cap=0.2, jitter=0.0))
    task = asyncio.create_task(informer.run())
    await asyncio.sleep(0.5)
    await _stop(task)
    watches = [r for r in api_fake.requests if "watch" in r]
    assert 2 <= len(watches) <= 4, f"{len(watches)} watches in 0.5 s: it spins"


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_unexpected_error_is_retried_like_any_other(
    fake: tuple[FakeApi, KubeClient],
) -> None:
    api_fake, api = fake
    api_fake.objects["p0"] = _pod("p0", "e1", 1)
    api_fake.bad_lists = 2  # answers the code does not expect (an AttributeError when read)
    informer, seen = _informer(api, api_fake)
    await _run_until_idle(informer, api_fake)
    assert informer.synced.is_set() and informer.lists == 1
    assert seen == [(None, "p0")]
    assert len([r for r in api_fake.requests if "watch" not in r]) == 3


def test_stored_writes_and_stale_events() -> None:
    """An owner's own write goes into the cache without moving the watch; with `stale`, a watch
    event older than the cached view is dropped (and not heard by the listeners)."""
    informer: Informer[int] = Informer(
        api=None,
        path=PATH,
        decode=lambda body: int(body["metadata"]["resourceVersion"]),
        stale=lambda cached, incoming: cached > incoming,
    )
    seen: list[tuple[str | None, int, int | None]] = []
    informer.listeners.append(lambda t, view, old, body: seen.append((t, view, old)))

    def pod(version: int) -> dict[str, Any]:
        return {"metadata": {"namespace": "ns", "name": "p", "resourceVersion": str(version)}}

    informer.replace([pod(3)], resource_version="3")
    informer.store(pod(7))
    assert informer.resource_version == "3"
    informer.handle_event({"type": "MODIFIED", "object": pod(5)})  # older than the write
    assert informer.get(("ns", "p")) == 7
    assert informer.resource_version == "5", "the watch moves on all the same"
    informer.handle_event({"type": "MODIFIED", "object": pod(8)})
    informer.handle_event({"type": "DELETED", "object": pod(9)})
    assert informer.get(("ns", "p")) is None
    assert seen == [(None, 3, None), ("MODIFIED", 7, 3), ("MODIFIED", 8, 7), ("DELETED", 9, 8)]
