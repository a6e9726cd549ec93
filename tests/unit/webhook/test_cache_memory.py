"""Issue 24: the webhook's cache keeps a compact view of each ExportJob (what GET, list, cancel and
an Idempotency-Key replay read), at most 2 KB per retained export, released when it is deleted."""

from __future__ import annotations

import asyncio
import copy
import gc
import tracemalloc
from typing import Any

import pytest

from export_operator.public_view import client_view
from export_operator.webhook.cache import ExportCache

RETAINED = 2_000
BUDGET = 2048
"""Bytes per retained export (issue 24: 11-16 KB each took 12,000 exports to the 256 Mi limit)."""


def finished_export(i: int) -> dict[str, Any]:
    """A Succeeded ExportJob as the API server returns it: labels, annotations, managedFields of
    three writers, the status with conditions, progress, result and notification."""
    name = f"api-{i:024x}"
    time = "2026-12-06T22:00:00Z"
    fields = {"f:spec": {"f:format": {}, "f:source": {"f:uri": {}}, "f:owner": {}}}
    return {
        "apiVersion": "exportjobs.dev/v1alpha1",
        "kind": "ExportJob",
        "metadata": {
            "name": name,
            "namespace": "exports",
            "uid": f"5c1c2d0e-0000-4000-8000-{i:012x}",
            "resourceVersion": str(100_000 + i),
            "generation": 1,
            "creationTimestamp": time,
            "labels": {
                "exportjobs.dev/source-kind": "api",
                "app.kubernetes.io/managed-by": "exportjobs-webhook",
                "exportjobs.dev/owner": "team-a",
            },
            "annotations": {
                "exportjobs.dev/request-sha256": f"{i:064x}",
                "exportjobs.dev/idempotency-key-sha256": f"{i + 1:064x}",
            },
            "managedFields": [
                {
                    "manager": m,
                    "operation": "Update",
                    "apiVersion": "exportjobs.dev/v1alpha1",
                    "time": time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": copy.deepcopy(fields),
                    **({"subresource": "status"} if m != "webhook" else {}),
                }
                for m in ("webhook", "operator", "processor")
            ],
        },
        "spec": {
            "source": {"uri": f"s3://exports-input/team-a/reports/2026/12/{i}.csv"},
            "format": "parquet",
            "destination": {"uri": "s3://exports-output/team-a/"},
            "cancel": False,
            "owner": "team-a",
            "notify": {"url": "https://hooks.example.com/exports"},
        },
        "status": {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "jobName": f"export-{name}",
            "attempts": 1,
            "startTime": time,
            "completionTime": time,
            "progress": {"rowsRead": 1_000_000 + i, "bytesRead": 80_000_000, "percent": 100},
            "result": {
                "uri": f"s3://exports-output/team-a/{name}/{i}.parquet",
                "bytes": 12_345_678,
                "rows": 1_000_000 + i,
                "sha256": f"{i:064x}",
                "format": "parquet",
            },
            "notification": {"state": "Delivered", "attempts": 1, "lastAttemptTime": time},
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": t,
                    "message": f"{t} at {time}",
                    "lastTransitionTime": time,
                }
                for t in ("Accepted", "Queued", "Running", "Succeeded")
            ],
        },
    }


def measured(cache: ExportCache, bodies: list[dict[str, Any]]) -> tuple[int, int]:
    """(bytes held after listing `bodies` into the cache, bytes after deleting them all)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache.informer.replace(bodies, resource_version="1")
        bodies.clear()  # the list's JSON is dropped after decoding, as the informer does
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        cache.informer.replace([], resource_version="2")
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held, left


def test_a_retained_export_costs_at_most_2_kb_and_is_released() -> None:
    cache = ExportCache(namespace="exports")
    held, left = measured(cache, [finished_export(i) for i in range(RETAINED)])
    per_export = held / RETAINED
    print(f"{per_export:.0f} bytes per retained export")
    assert per_export <= BUDGET, f"{per_export:.0f} bytes per retained export"
    assert left / RETAINED < 100, f"{left / RETAINED:.0f} bytes per export left after deletion"


def test_the_compact_view_answers_get_and_list_as_the_object_does() -> None:
    cache = ExportCache(namespace="exports")
    body = finished_export(7)
    cache.upsert(copy.deepcopy(body))
    cached = cache.get(body["metadata"]["name"])
    assert cached is not None
    assert client_view(cached) == client_view(body)
    assert cached["metadata"]["annotations"] == {
        "exportjobs.dev/request-sha256": body["metadata"]["annotations"][
            "exportjobs.dev/request-sha256"
        ]
    }
    assert "managedFields" not in cached["metadata"] and "conditions" not in cached["status"]


async def test_a_thousand_deletions_give_the_freed_memory_back_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python frees deleted views, but the C allocator keeps their pages: after a batch of
    deletions the cache asks it to return them (malloc_trim), once per 1,000, after the batch."""
    from export_operator.webhook import cache as cache_module

    trims: list[float] = []
    monkeypatch.setattr(cache_module, "TRIM_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(cache_module, "release_free_memory", lambda: trims.append(1) or True)
    cache = ExportCache(namespace="exports")
    cache.informer.replace([finished_export(i) for i in range(1500)], resource_version="1")
    assert trims == []
    cache.informer.replace([], resource_version="2")  # 1,500 deleted
    assert trims == [], "not in the middle of the batch"
    await asyncio.sleep(0.2)
    assert trims == [1]


def test_the_allocator_can_give_memory_back_here() -> None:
    from export_operator.freemem import release_free_memory

    assert release_free_memory() is True  # glibc (Debian), as in the images
