"""POST /v1/events/s3 over the in-memory store: formats, dedup, auth, bad events."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from export_operator import resource
from export_operator.resource import ExportFormat
from tests.support import samples
from tests.support.webhook_harness import AUTH, Harness

URL = "/v1/events/s3"


async def send(h: Harness, body: Any, *, query: str = "?format=csv", **headers: str) -> Any:
    return await h.client.post(URL + query, json=body, headers={**AUTH, **headers})


@pytest.mark.parametrize(("raw", "key"), samples.ENCODED_KEYS)
async def test_s3_event_creates_one_export_with_the_decoded_key(
    harness: Harness, raw: str, key: str
) -> None:
    response = await send(harness, samples.s3_event(bucket="in-bucket", key=raw, version="v1"))
    assert response.status == 202
    body = await response.json()
    expected = resource.export_name_for_object(
        bucket="in-bucket", key=key, version="v1", export_format=ExportFormat.CSV
    )
    assert body["ids"] == [expected] and body["created"] == 1
    assert response.headers["Location"] == f"/v1/exports/{expected}"
    spec = harness.store.objects[expected]["spec"]
    assert spec["source"] == {
        "uri": f"s3://in-bucket/{key}",
        "versionId": "v1",
        "etag": "d41d8cd98f00b204e9800998ecf8427e",
    }
    assert harness.store.objects[expected]["metadata"]["labels"][resource.LABEL_SOURCE_KIND] == "s3"


async def test_redelivery_creates_nothing_new(harness: Harness) -> None:
    event = samples.s3_event(bucket="in-bucket", key="a.csv", version="v1")
    first = await (await send(harness, event)).json()
    again = await send(harness, event)
    assert again.status == 202
    second = await again.json()
    assert second["ids"] == first["ids"] and second["created"] == 0 and second["duplicates"] == 1
    assert len(harness.store.objects) == 1


async def test_twenty_concurrent_copies_create_one(harness: Harness) -> None:
    event = samples.s3_event(bucket="in-bucket", key="b.csv", version="v7")
    responses = await asyncio.gather(*(send(harness, event) for _ in range(20)))
    assert {r.status for r in responses} == {202}
    ids = {tuple((await r.json())["ids"]) for r in responses}
    assert len(ids) == 1 and len(harness.store.objects) == 1


async def test_other_version_or_format_is_a_new_export(harness: Harness) -> None:
    await send(harness, samples.s3_event(bucket="in-bucket", key="c.csv", version="v1"))
    await send(harness, samples.s3_event(bucket="in-bucket", key="c.csv", version="v2"))
    await send(
        harness,
        samples.s3_event(bucket="in-bucket", key="c.csv", version="v2"),
        query="?format=jsonl",
    )
    assert len(harness.store.objects) == 3


async def test_format_rules_longest_prefix_wins(harness: Harness) -> None:
    a = await send(harness, samples.s3_event(bucket="rules", key="x/a.csv"), query="")
    b = await send(harness, samples.s3_event(bucket="rules", key="reports/b.csv"), query="")
    formats = {harness.store.objects[(await r.json())["ids"][0]]["spec"]["format"] for r in (a, b)}
    assert formats == {"csv.gz", "parquet"}


async def test_no_format_is_422_and_nothing_created(harness: Harness) -> None:
    response = await send(harness, samples.s3_event(bucket="norules", key="a.csv"), query="")
    assert response.status == 422
    assert (await response.json())["code"] == "unknown-format"
    assert harness.store.create_calls == 0


async def test_unknown_format_query_is_422(harness: Harness) -> None:
    response = await send(harness, samples.s3_event(), query="?format=xml")
    assert response.status == 422 and (await response.json())["code"] == "unknown-format"
    assert harness.store.create_calls == 0


async def test_one_bad_record_creates_nothing(harness: Harness) -> None:
    event = samples.s3_event(bucket="in-bucket", key="good.csv")
    bad = copy.deepcopy(event["Records"][0])
    bad["s3"]["object"]["key"] = "bad%00key"
    event["Records"].append(bad)
    response = await send(harness, event)
    assert response.status == 422
    assert (await response.json())["code"] == "invalid-s3-key"
    assert harness.store.create_calls == 0


async def test_test_event_is_acknowledged_and_ignored(harness: Harness) -> None:
    response = await send(harness, samples.AWS_TEST_EVENT)
    assert response.status == 200
    assert await response.json() == {"ids": [], "ignored": ["s3:TestEvent"], "status": "ignored"}
    assert harness.store.create_calls == 0


async def test_minio_body_is_labelled_minio(harness: Harness) -> None:
    response = await send(harness, samples.minio_event(bucket="images", key="my+photo.csv"))
    name = (await response.json())["ids"][0]
    obj = harness.store.objects[name]
    assert obj["spec"]["source"]["uri"] == "s3://images/my photo.csv"
    assert obj["metadata"]["labels"][resource.LABEL_SOURCE_KIND] == "minio"


async def test_eventbridge_with_its_api_key(harness: Harness) -> None:
    response = await harness.client.post(
        URL + "?format=parquet",
        json=samples.EVENTBRIDGE_OBJECT_CREATED,
        headers={"X-Api-Key": "eb-key"},
    )
    assert response.status == 202
    name = (await response.json())["ids"][0]
    assert harness.store.objects[name]["spec"]["source"] == {
        "uri": "s3://amzn-s3-demo-bucket1/example-key",
        "versionId": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        "etag": "b1946ac92492d2347c6235b4d2611184",
    }


async def test_api_key_does_not_authenticate_other_shapes(harness: Harness) -> None:
    response = await harness.client.post(
        URL + "?format=csv", json=samples.s3_event(), headers={"x-api-key": "eb-key"}
    )
    assert response.status == 401
    assert harness.store.create_calls == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"x-api-key": "wrong"}, {"x-api-key": ""}],
)
async def test_unauthenticated_events_are_401(harness: Harness, headers: dict[str, str]) -> None:
    for body in (samples.s3_event(), samples.EVENTBRIDGE_OBJECT_CREATED, samples.MINIO_EVENT):
        response = await harness.client.post(URL + "?format=csv", json=body, headers=headers)
        assert response.status == 401
    assert harness.store.create_calls == 0


@pytest.mark.parametrize("body", [{"hello": 1}, [], "text", {"Records": [{"x": 1}]}])
async def test_unsupported_bodies_are_422(harness: Harness, body: Any) -> None:
    response = await send(harness, body)
    assert response.status == 422
    assert (await response.json())["code"] == "unsupported-event"


async def test_api_server_down_is_503_never_202(harness: Harness) -> None:
    harness.store.down = True
    response = await send(harness, samples.s3_event())
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert harness.store.objects == {}
