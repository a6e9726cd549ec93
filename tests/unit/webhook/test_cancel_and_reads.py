"""Cancel semantics (409 on a finished export, a conditional write) and read-your-write across
replicas (a cache miss is settled by one bounded API read, absences remembered briefly)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from export_operator.webhook.cache import ExportCache
from export_operator.webhook.lookup import MissLookup
from export_operator.webhook.store import StoreUnavailableError
from tests.support.webhook_harness import AUTH, Harness

SOURCE = "s3://exports-input/data/a.csv"


async def created(h: Harness) -> str:
    response = await h.client.post(
        "/v1/exports", json={"source": SOURCE, "format": "csv"}, headers=AUTH
    )
    assert response.status == 202
    return str((await response.json())["id"])


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
async def test_delete_of_a_finished_export_is_409_with_its_phase(
    harness: Harness, phase: str
) -> None:
    name = await created(harness)
    harness.store.set_status(name, {"phase": phase})
    for _ in range(2):
        response = await harness.client.delete(f"/v1/exports/{name}", headers=AUTH)
        assert response.status == 409
        problem = await response.json()
        assert problem["code"] == "export-finished" and problem["phase"] == phase
        assert phase in problem["detail"]
    assert "cancel" not in harness.store.objects[name]["spec"]


async def test_delete_sees_a_completion_the_cache_has_not_seen(harness: Harness) -> None:
    """The cache says Running; the export succeeded meanwhile: the conditional write fails,
    the fresh read shows Succeeded, the answer is 409 and spec.cancel stays unset."""
    name = await created(harness)
    harness.store.set_status(name, {"phase": "Running"})
    harness.store.set_status(name, {"phase": "Succeeded"}, watch=False)
    response = await harness.client.delete(f"/v1/exports/{name}", headers=AUTH)
    assert response.status == 409
    assert (await response.json())["phase"] == "Succeeded"
    assert "cancel" not in harness.store.objects[name]["spec"]


async def test_delete_of_a_running_export_is_202_and_idempotent(harness: Harness) -> None:
    name = await created(harness)
    harness.store.set_status(name, {"phase": "Running"})
    for _ in range(2):
        response = await harness.client.delete(f"/v1/exports/{name}", headers=AUTH)
        assert response.status == 202
    assert harness.store.objects[name]["spec"]["cancel"] is True


async def test_get_finds_an_export_another_replica_created(harness: Harness) -> None:
    name = await created(harness)
    # As if another replica stored it and our watch lags (our last list did not have it):
    harness.cache.informer.replace([], resource_version="1")
    reads = harness.store.read_calls
    response = await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
    assert response.status == 200
    assert (await response.json())["id"] == name
    assert harness.store.read_calls == reads + 1
    await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
    assert harness.store.read_calls == reads + 1, "the read filled the cache"


async def test_unknown_ids_are_read_once_per_negative_ttl(harness: Harness) -> None:
    for _ in range(5):
        response = await harness.client.get("/v1/exports/api-unknown", headers=AUTH)
        assert response.status == 404
    assert harness.store.read_calls == 1


async def test_get_of_an_unknown_id_when_the_api_server_is_down_is_404(harness: Harness) -> None:
    harness.store.down = True
    response = await harness.client.get("/v1/exports/api-other", headers=AUTH)
    assert response.status == 404


class SlowReads:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self, name: str) -> dict[str, Any] | None:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise StoreUnavailableError("down")
        return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "5"}}


async def test_concurrent_misses_of_one_id_share_one_read() -> None:
    cache = ExportCache(namespace="ns")
    reads = SlowReads()
    lookup = MissLookup(cache=cache, read=reads)
    waiting = [asyncio.create_task(lookup.get("a")) for _ in range(10)]
    await asyncio.sleep(0)
    reads.release.set()
    found = await asyncio.gather(*waiting)
    assert reads.calls == 1 and all(f and f["metadata"]["name"] == "a" for f in found)
    assert cache.get("a") is not None


async def test_reads_in_flight_are_bounded() -> None:
    reads = SlowReads()
    lookup = MissLookup(cache=ExportCache(namespace="ns"), read=reads, max_in_flight=2)
    tasks = [asyncio.create_task(lookup.get(f"id-{i}")) for i in range(5)]
    await asyncio.sleep(0)
    assert reads.calls == 2
    reads.release.set()
    results = await asyncio.gather(*tasks)
    assert sum(r is not None for r in results) == 2


async def test_a_failed_read_is_not_remembered_and_reaches_every_waiter() -> None:
    reads = SlowReads()
    reads.fail = True
    lookup = MissLookup(cache=ExportCache(namespace="ns"), read=reads)
    tasks = [asyncio.create_task(lookup.get("a")) for _ in range(3)]
    await asyncio.sleep(0)
    reads.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
    reads.fail = False
    assert await lookup.get("a") is not None and reads.calls == 2


async def test_negatives_expire() -> None:
    now = [0.0]
    calls = []

    async def absent(name: str) -> None:
        calls.append(name)

    lookup = MissLookup(
        cache=ExportCache(namespace="ns"), read=absent, negative_ttl=2, clock=lambda: now[0]
    )
    assert await lookup.get("x") is None and await lookup.get("x") is None
    assert calls == ["x"]
    now[0] = 2.5
    assert await lookup.get("x") is None
    assert calls == ["x", "x"]


async def test_an_api_server_rejection_is_422_not_503(harness: Harness) -> None:
    harness.store.reject = "spec.csv: Invalid value: the CEL rule said no"
    response = await harness.client.post(
        "/v1/exports", json={"source": SOURCE, "format": "csv"}, headers=AUTH
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "rejected-by-api-server" and "CEL rule" in problem["detail"]
