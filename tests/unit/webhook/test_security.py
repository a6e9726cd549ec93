"""The webhook's boundaries (issue 11): allowed buckets and prefixes, presigning only an export's
own output, record caps, and hostile bytes answered with 4xx problem documents."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from export_operator.webhook.bounds import Bounds, S3Prefix, template_prefix
from export_operator.webhook.settings import WebhookSettings
from tests.support import hostile_http, samples
from tests.support.webhook_harness import AUTH, TOKEN, Harness, MakeHarness

BOUNDED = {
    "allowed_sources": ("s3://exports-input/", "s3://datasets/"),
    "allowed_destinations": ("s3://exports-output/tenant-a/",),
    "destination_uri": "s3://exports-output/tenant-a/",
}


def event(bucket: str, key: str, count: int = 1) -> dict[str, Any]:
    body = samples.s3_event(bucket=bucket, key=key)
    record = body["Records"][0]
    body["Records"] = [
        {**record, "s3": {**record["s3"], "object": {**record["s3"]["object"], "key": f"{key}{i}"}}}
        for i in range(count)
    ]
    return body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"source": "s3://exports-output/tenant-b/secret-report.csv"}, "source-not-allowed"),
        ({"source": "s3://exports-output/tenant-a/x/report.csv"}, "source-not-allowed"),
        ({"source": "s3://other-bucket/a.csv"}, "source-not-allowed"),
        ({"source": "s3://exports-inputs/a.csv"}, "source-not-allowed"),
        (
            {"source": "s3://exports-input/a.csv", "destination": "s3://exports-input/attack/out/"},
            "destination-not-allowed",
        ),
        (
            {"source": "s3://exports-input/a.csv", "destination": "s3://datasets/"},
            "destination-not-allowed",
        ),
        (
            {"source": "s3://exports-input/a.csv", "destination": "s3://exports-output/"},
            "destination-not-allowed",
        ),
    ],
)
async def test_sources_and_destinations_out_of_bounds_are_422(
    make_harness: MakeHarness, body: dict[str, Any], code: str
) -> None:
    h = await make_harness(**BOUNDED)
    response = await h.client.post("/v1/exports", json={"format": "csv", **body}, headers=AUTH)
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == code
    assert response.content_type == "application/problem+json"
    assert h.store.create_calls == 0


async def test_allowed_source_and_destination_are_accepted(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED)
    for body in (
        {"source": "s3://exports-input/a.csv"},
        {"source": "s3://exports-input/b.csv", "destination": "s3://exports-output/tenant-a/x/"},
        {"dataset_id": "7f1b5e4e-8f35-4a5e-9c57-3d2b8f0e6a11"},
    ):
        response = await h.client.post("/v1/exports", json={"format": "csv", **body}, headers=AUTH)
        assert response.status == 202, await response.text()


def test_default_bounds_are_the_configured_input_and_output_locations() -> None:
    settings = WebhookSettings.from_env(
        {
            "EXPORTJOBS_WEBHOOK_DATASET_URI_TEMPLATE": "s3://datasets/v2/{dataset_id}.csv",
            "EXPORTJOBS_WEBHOOK_FORMAT_RULES": "exports-input/reports/=parquet",
            "EXPORTJOBS_WEBHOOK_DESTINATION_URI": "s3://exports-output/exports/",
        }
    )
    assert settings.bounds == Bounds(
        sources=(S3Prefix("datasets", "v2/"), S3Prefix("exports-input", "reports/")),
        destinations=(S3Prefix("exports-output", "exports/"),),
    )
    configured = WebhookSettings.from_env(
        {
            "EXPORTJOBS_WEBHOOK_ALLOWED_SOURCES": "s3://aaa/, s3://bbb/in/",
            "EXPORTJOBS_WEBHOOK_ALLOWED_DESTINATIONS": "s3://ccc",
        }
    )
    assert configured.bounds == Bounds(
        sources=(S3Prefix("aaa", ""), S3Prefix("bbb", "in/")),
        destinations=(S3Prefix("ccc", ""),),
    )
    assert template_prefix("s3://datasets/{dataset_id}.csv") == "s3://datasets/"
    with pytest.raises(ValueError, match="allowed prefixes"):
        WebhookSettings.from_env({"EXPORTJOBS_WEBHOOK_ALLOWED_SOURCES": "http://x/"})


async def test_events_under_an_output_prefix_are_ignored(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED)
    body = event("exports-output", "tenant-a/api-1/report.csv")
    response = await h.client.post("/v1/events/s3?format=csv", json=body, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "ignored"
    assert answer["ignored"] == ["output object s3://exports-output/tenant-a/api-1/report.csv0"]
    assert h.store.create_calls == 0


async def test_events_outside_the_sources_are_422(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED)
    body = event("elsewhere", "a.csv")
    response = await h.client.post("/v1/events/s3?format=csv", json=body, headers=AUTH)
    assert response.status == 422
    assert (await response.json())["code"] == "source-not-allowed"
    assert h.store.create_calls == 0


@pytest.mark.parametrize(
    "result_uri",
    [
        "s3://exports-output/tenant-b/secret-report.csv",
        "s3://exports-output/tenant-a/other-export/report.csv",
        "s3://exports-output/tenant-a/api-own-suffix/report.csv",
        "s3://exports-input/a.csv",
    ],
)
async def test_a_result_outside_its_own_prefix_gets_no_url(
    make_harness: MakeHarness, result_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(**BOUNDED)
    response = await h.client.post(
        "/v1/exports", json={"format": "csv", "source": "s3://exports-input/a.csv"}, headers=AUTH
    )
    name = (await response.json())["id"]
    h.store.set_status(name, {"phase": "Succeeded", "result": {"uri": result_uri}})
    view = await (await h.client.get(f"/v1/exports/{name}", headers=AUTH)).json()
    assert view["result"]["download_url"] is None
    assert f"result {result_uri} is not under its own output prefix" in caplog.text
    metrics = await (await h.client.get("/metrics")).text()
    assert "exportjobs_webhook_presign_refused_total 1.0" in metrics


async def test_a_result_under_its_own_prefix_is_presigned(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED)
    response = await h.client.post(
        "/v1/exports", json={"format": "csv", "source": "s3://exports-input/a.csv"}, headers=AUTH
    )
    name = (await response.json())["id"]
    uri = f"s3://exports-output/tenant-a/{name}/a.csv"
    h.store.set_status(name, {"phase": "Succeeded", "result": {"uri": uri}})
    view = await (await h.client.get(f"/v1/exports/{name}", headers=AUTH)).json()
    assert view["result"]["download_url"].startswith(
        f"http://127.0.0.1:9/exports-output/tenant-a/{name}/a.csv?"
    )


async def test_too_many_records_is_413_and_creates_nothing(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED, max_event_records=10)
    body = event("exports-input", "many/", count=11)
    response = await h.client.post("/v1/events/s3?format=csv", json=body, headers=AUTH)
    assert response.status == 413
    assert (await response.json())["code"] == "too-many-records"
    assert h.store.create_calls == 0


async def test_a_large_event_creates_with_bounded_concurrency(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED, create_concurrency=4)
    in_flight = peak = 0
    create = h.store.create

    async def slow_create(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return await create(body)

    h.store.create = slow_create  # type: ignore[method-assign]
    body = event("exports-input", "many/", count=200)
    response = await h.client.post("/v1/events/s3?format=csv", json=body, headers=AUTH)
    assert response.status == 202, await response.text()
    assert (await response.json())["created"] == 200
    assert peak == 4


async def test_one_failed_create_fails_the_event_with_503(make_harness: MakeHarness) -> None:
    h = await make_harness(**BOUNDED, create_concurrency=4)
    h.store.down = True
    body = event("exports-input", "many/", count=50)
    response = await h.client.post("/v1/events/s3?format=csv", json=body, headers=AUTH)
    assert response.status == 503
    assert (await response.json())["code"] == "api-server-unavailable"
    assert h.store.create_calls <= 4


@pytest.mark.parametrize("case", hostile_http.cases(), ids=lambda case: case.name)
async def test_hostile_bytes_get_a_4xx_problem(
    make_harness: MakeHarness, case: hostile_http.Case
) -> None:
    h = await make_harness(**BOUNDED)
    server = h.client.server
    answer = await hostile_http.send(str(server.host), int(server.port or 0), case, token=TOKEN)
    assert hostile_http.judge(case, answer) is None, hostile_http.judge(case, answer)
    assert h.store.create_calls == 0


async def test_deep_nesting_is_malformed_json(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/exports",
        data=b"[" * 100_000,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await response.json())["code"] == "malformed-json"


async def test_superscript_limit_is_422(harness: Harness) -> None:
    response = await harness.client.get("/v1/exports?limit=%C2%B2", headers=AUTH)
    assert response.status == 422
    assert json.loads(await response.text())["code"] == "invalid-request"
