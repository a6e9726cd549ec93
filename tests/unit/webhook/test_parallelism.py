"""`parallelism` on POST /v1/exports: stored as `spec.parallelism` (the operator splits the export
over that many pods at most, docs/api.md "Split exports"), bounded 1-32, refused with 422 else;
a split export's result and summed progress as GET shows them."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator.public_view import client_view
from tests.support.webhook_harness import AUTH, Harness

SOURCE = "s3://exports-input/data/a.csv"


async def post(h: Harness, body: Any) -> Any:
    return await h.client.post("/v1/exports", json=body, headers=AUTH)


@pytest.mark.parametrize("parallelism", [1, 4, 32])
async def test_parallelism_is_stored(harness: Harness, parallelism: int) -> None:
    response = await post(
        harness, {"source": SOURCE, "format": "jsonl", "parallelism": parallelism}
    )
    assert response.status == 202
    name = (await response.json())["id"]
    assert harness.store.objects[name]["spec"]["parallelism"] == parallelism


async def test_without_parallelism_the_spec_has_none(harness: Harness) -> None:
    response = await post(harness, {"source": SOURCE, "format": "jsonl"})
    name = (await response.json())["id"]
    assert "parallelism" not in harness.store.objects[name]["spec"]


@pytest.mark.parametrize("value", [0, 33, -1, True, 2.5, "4", None, 10**30])
async def test_out_of_bounds_parallelism_gets_422(harness: Harness, value: Any) -> None:
    response = await post(harness, {"source": SOURCE, "format": "csv", "parallelism": value})
    assert response.status == 422
    problem = await response.json()
    assert any(e["field"] == "parallelism" for e in problem["errors"]), problem
    assert harness.store.create_calls == 0


def test_the_view_of_a_split_export() -> None:
    split = {"ranges": 2, "redone": [], "partBytes": [5, 6]}
    status = {
        "phase": "Succeeded",
        "progress": {
            "bytesRead": 11,
            "rows": 3,
            "ranges": {"0": {"bytesRead": 5, "rows": 1}, "1": {"bytesRead": 6, "rows": 2}},
        },
        "result": {"uri": "s3://o/k", "bytes": 11, "rows": 3, "sha256": "ab" * 32, "split": split},
    }
    view = client_view({"metadata": {"name": "e"}, "spec": {}, "status": status})
    assert view["progress"] == {"bytesRead": 11, "rows": 3}  # the ranges stay on the resource
    assert view["result"]["split"] == split
