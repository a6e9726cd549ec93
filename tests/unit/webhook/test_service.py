"""Probes, metrics, the OpenAPI document, request ids and JSON logs, settings and the cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from export_operator.jsonlogs import JsonFormatter
from export_operator.resource import ExportFormat
from export_operator.webhook.cache import ExportCache
from export_operator.webhook.listing import ListQuery, decode_continue
from export_operator.webhook.setting_groups import AWS_SNS_HOST_PATTERN
from export_operator.webhook.settings import WebhookSettings
from tests.support.webhook_harness import AUTH, Harness, MakeHarness


async def test_healthz_and_readyz(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).status == 200
    ready = await harness.client.get("/readyz")
    assert ready.status == 200
    harness.store.down = True
    response = await harness.client.get("/readyz")
    assert response.status == 503 and "API server" in (await response.json())["detail"]


async def test_readyz_waits_for_the_cache(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.cache.informer.synced.clear()  # no list has succeeded yet
    response = await h.client.get("/readyz")
    assert response.status == 503
    assert "not synced" in (await response.json())["detail"]
    assert (await h.client.get("/v1/exports/x", headers=AUTH)).status == 503


async def test_metrics_count_requests_creations_dedup_and_auth_failures(harness: Harness) -> None:
    body = {"source": "s3://in-bucket/a.csv", "format": "csv"}
    key = {"Idempotency-Key": "k1", **AUTH}
    await harness.client.post("/v1/exports", json=body, headers=key)
    await harness.client.post("/v1/exports", json=body, headers=key)
    await harness.client.post("/v1/exports", json=body)
    text = await (await harness.client.get("/metrics")).text()
    assert 'exportjobs_webhook_exports_created_total{owner="default",source="api"} 1.0' in text
    assert 'exportjobs_webhook_dedup_hits_total{source="api"} 1.0' in text
    assert (
        'exportjobs_webhook_auth_failures_total{reason="missing",route="/v1/exports"} 1.0' in text
    )
    assert (
        'exportjobs_webhook_requests_total{code="202",method="POST",route="/v1/exports"} 2.0'
        in text
    )
    assert "exportjobs_webhook_request_duration_seconds_bucket" in text
    assert "exportjobs_webhook_cached_exports 1.0" in text


async def test_openapi_describes_every_route(harness: Harness) -> None:
    document = await (await harness.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    app = harness.client.server.app
    assert app is not None
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        operation = document["paths"][path][route.method.lower()]
        assert operation["responses"], path
    schemas = document["components"]["schemas"]
    code_ref = schemas["Problem"]["properties"]["code"]["$ref"]
    codes = schemas[code_ref.rsplit("/", 1)[1]]["enum"]
    assert "idempotency-key-reused" in codes


async def test_request_id_is_echoed_and_logged(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(access_log=True)
    with caplog.at_level(logging.INFO, logger="export_operator.webhook.access"):
        response = await h.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    generated = (await h.client.get("/healthz")).headers["X-Request-Id"]
    assert len(generated) == 32
    line = json.loads(JsonFormatter().format(caplog.records[0]))
    assert line["request_id"] == "abc-123"
    assert line["status"] == 200 and line["route"] == "/healthz"


def test_settings_from_env(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("file-token\n")
    (secret / "..data").mkdir()
    env = {
        "EXPORTJOBS_NAMESPACE": "shared",
        "EXPORTJOBS_WEBHOOK_TOKENS": "a, b",
        "EXPORTJOBS_WEBHOOK_TOKENS_FILE": str(secret),
        "EXPORTJOBS_WEBHOOK_FORMAT_RULES": "incoming/reports/=parquet,incoming=csv.gz",
        "EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_HEADER": "X-EB-Key",
        "EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY": "k",
        "EXPORTJOBS_WEBHOOK_MAX_BODY_BYTES": "4096",
        "EXPORTJOBS_WEBHOOK_SNS_HOST_PATTERN": ".*",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    settings = WebhookSettings.from_env(env)
    assert settings.namespace == "shared"
    assert settings.auth.tokens == ("a", "b", "file-token")
    assert settings.format_for(bucket="incoming", key="reports/x.csv") == ExportFormat.PARQUET
    assert settings.format_for(bucket="incoming", key="x.csv") == ExportFormat.CSV_GZ
    assert settings.format_for(bucket="other", key="x.csv") is None
    assert settings.auth.eventbridge_api_key_header == "x-eb-key"
    assert settings.http.max_body_bytes == 4096
    assert settings.presign.s3_endpoint_url == "http://127.0.0.1:9000"
    # The SNS host allowlist is not configurable from the environment.
    assert settings.sns.sns_host_pattern == AWS_SNS_HOST_PATTERN
    assert WebhookSettings.from_env({"EXPORTJOBS_WEBHOOK_NAMESPACE": "own"}).namespace == "own"


@pytest.mark.parametrize(
    "env",
    [
        {"EXPORTJOBS_WEBHOOK_PORT": "eighty"},
        {"EXPORTJOBS_WEBHOOK_FORMAT_RULES": "bucket=xlsx"},
        {"EXPORTJOBS_WEBHOOK_FORMAT_RULES": "no-equals"},
        {"EXPORTJOBS_WEBHOOK_DATASET_URI_TEMPLATE": "s3://x/static.csv"},
        {"EXPORTJOBS_WEBHOOK_DESTINATION_URI": "http://x/"},
        {"EXPORTJOBS_WEBHOOK_PAGE_SIZE": "1000"},
    ],
)
def test_invalid_settings_raise(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid webhook settings"):
        WebhookSettings.from_env(env)


def _obj(
    name: str, version: int, phase: str | None = None, *, created: str | None = None
) -> dict[str, Any]:
    status = {"phase": phase} if phase else {}
    meta = {"name": name, "namespace": "ns", "resourceVersion": str(version)}
    if created:
        meta["creationTimestamp"] = created
    return {"metadata": meta, "status": status}


def _watch(cache: ExportCache, event_type: str, obj: dict[str, Any]) -> None:
    """Deliver one watch event to the cache's informer."""
    cache.informer.handle_event({"type": event_type, "object": obj})


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in items]


def test_cache_keeps_the_newer_version() -> None:
    cache = ExportCache(namespace="ns")
    cache.upsert(_obj("a", 10, "Running"))  # the webhook's own write
    assert cache.informer.resource_version == "", "its own writes do not move the watch"
    _watch(cache, "MODIFIED", _obj("a", 9, "Pending"))  # the watch lags behind that write
    assert cache.get("a") == _obj("a", 10, "Running")
    cache.upsert(_obj("a", 8, "Pending"))
    assert cache.get("a") == _obj("a", 10, "Running")
    _watch(cache, "MODIFIED", _obj("a", 11, "Succeeded"))
    assert cache.get("a") == _obj("a", 11, "Succeeded")
    assert cache.informer.resource_version == "11"
    _watch(cache, "DELETED", _obj("a", 12, "Succeeded"))
    assert cache.get("a") is None and len(cache) == 0


def test_cache_pages_survive_changes_between_pages() -> None:
    """Newest first; what is created or deleted between two pages never shifts the next one."""
    cache = ExportCache(namespace="ns")
    assert not cache.synced
    created = {n: f"2026-11-0{i + 1}T00:00:00Z" for i, n in enumerate("abcde")}
    cache.informer.replace([_obj(n, 1, created=created[n]) for n in "abcde"], resource_version="1")
    assert cache.synced
    first, token = cache.page(ListQuery(limit=2))
    assert _names(first) == ["e", "d"]
    _watch(cache, "DELETED", _obj("c", 2, created=created["c"]))
    cache.upsert(_obj("new", 3, created="2026-12-01T00:00:00Z"))
    rest, token2 = cache.page(ListQuery(limit=5, after=decode_continue(token or "")))
    assert _names(rest) == ["b", "a"]
    assert token2 is None
    # A list again (after 410 Gone): what it no longer shows is gone from the pages too.
    cache.informer.replace(
        [_obj(n, 4, created=created.get(n, "2026-12-01T00:00:00Z")) for n in ("a", "new")],
        resource_version="4",
    )
    assert _names(cache.page(ListQuery(limit=10))[0]) == ["new", "a"]
    with pytest.raises(ValueError):
        decode_continue("%%%")
