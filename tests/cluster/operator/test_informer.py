"""The operator's informer against the real API server: a paginated list, watch events, watches
the server ends (resumed from the last resourceVersion, no new list), and a resourceVersion the
server no longer has (410 Gone: listed again, what vanished meanwhile reported deleted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from export_operator import kube, resource
from export_operator.controller.snapshots import ExportView
from export_operator.informer import Informer
from export_operator.kube import collection_path
from export_processor.common import Backoff
from tests.support.cluster import LocalCluster
from tests.support.operator_process import Exports
from tests.support.wait import eventually

pytestmark = pytest.mark.cluster

Seen = list[tuple[str | None, str]]


@pytest.fixture
async def api(cluster: LocalCluster) -> AsyncIterator[kube.KubeClient]:
    api = kube.KubeClient(
        await kube.new_api_client(kubeconfig=str(cluster.kubeconfig), trust_env=False)
    )
    try:
        yield api
    finally:
        await api.close()


def _informer(
    api: kube.KubeClient, namespace: str, **kwargs: Any
) -> tuple[Informer[ExportView], Seen]:
    informer: Informer[ExportView] = Informer(
        api=api,
        path=collection_path(resource.API_VERSION, resource.PLURAL, namespace),
        decode=ExportView.from_body,
        retry=Backoff(base=0.05, cap=0.1),
        **kwargs,
    )
    seen: Seen = []
    informer.listeners.append(lambda t, view, old, body: seen.append((t, view.name)))
    return informer, seen


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_list_in_pages_then_events_and_resumed_watches(
    api: kube.KubeClient, exports: Exports
) -> None:
    for i in range(5):
        await asyncio.to_thread(exports.create, f"e{i}")
    # The server ends each watch after a second: the informer resumes from where it was.
    informer, seen = _informer(api, exports.namespace, page_size=2, watch_timeout=1)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 15)
        assert sorted(k[1] for k in informer.items) == [f"e{i}" for i in range(5)]
        assert sorted(seen) == [(None, f"e{i}") for i in range(5)]
        await asyncio.sleep(2.5)  # at least two watches ended by the server
        await asyncio.to_thread(exports.patch_spec, "e1", {"cancel": True})
        await asyncio.to_thread(exports.delete, "e2")
        await asyncio.to_thread(exports.create, "e5")
        await eventually("the three events", lambda: len(seen) >= 8)
        assert seen[5:] == [("MODIFIED", "e1"), ("DELETED", "e2"), ("ADDED", "e5")]
        e1 = informer.get((exports.namespace, "e1"))
        assert e1 is not None and e1.cancel_requested
        listed = {item["metadata"]["name"] for item in await asyncio.to_thread(exports.list)}
        assert {k[1] for k in informer.items} == listed
        assert informer.lists == 1, "watches the server ended were resumed, not listed again"
    finally:
        await _stop(task)


async def test_a_resource_version_too_old_lists_again(
    api: kube.KubeClient, exports: Exports
) -> None:
    for name in ("a", "b"):
        await asyncio.to_thread(exports.create, name)
    informer, seen = _informer(api, exports.namespace)
    await informer.list_all()
    # While this informer was not watching: b deleted, c created; and it resumes from a
    # resourceVersion long compacted out of the API server's watch cache.
    await asyncio.to_thread(exports.delete, "b")
    await asyncio.to_thread(exports.create, "c")
    informer.resource_version = "1"
    task = asyncio.create_task(informer.run())
    try:
        await eventually("a second list", lambda: informer.lists == 2)
        assert sorted(k[1] for k in informer.items) == ["a", "c"]
        assert ("DELETED", "b") in seen[2:]
        assert sorted(e for e in seen[2:] if e[0] is None) == [(None, "a"), (None, "c")]
        # And it watches on from the new list.
        await asyncio.to_thread(exports.create, "d")
        await eventually("d", lambda: ("ADDED", "d") in seen)
    finally:
        await _stop(task)
