"""Fast webhook tests: the real app over an in-memory ExportJob store (no API server)."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from export_operator.resource import ExportFormat
from export_operator.webhook import create_app
from export_operator.webhook.cache import ExportCache
from export_operator.webhook.settings import FormatRule, WebhookSettings
from export_operator.webhook.store import (
    AlreadyExistsError,
    StaleVersionError,
    StoreRejectedError,
    StoreUnavailableError,
)

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEST_SOURCE_BUCKETS = (
    "amzn-s3-demo-bucket1", "bucket", "datasets", "elsewhere", "exports-input", "images",
    "in-bucket", "mybucket", "norules", "other", "rules", "uploads",
)  # fmt: skip


class FakeStore:
    """An ExportStore in a dict, with the API server's name uniqueness and a `down` switch."""

    def __init__(self, cache: ExportCache) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.cache = cache
        self.down = False
        self.version = 100
        self.create_calls = 0
        self.read_calls = 0
        self.reject: str | None = None
        """When set, creates are refused as the API server refuses an invalid object."""

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.create_calls += 1
        if self.down:
            raise StoreUnavailableError("connection refused")
        if self.reject is not None:
            raise StoreRejectedError(self.reject)
        name = body["metadata"]["name"]
        if name in self.objects:
            raise AlreadyExistsError(name)
        obj = copy.deepcopy(body)
        obj["metadata"]["creationTimestamp"] = datetime.datetime.now(datetime.UTC).isoformat()
        self._stamp(obj)
        self.objects[name] = obj
        return copy.deepcopy(obj)

    async def read(self, name: str) -> dict[str, Any] | None:
        self.read_calls += 1
        if self.down:
            raise StoreUnavailableError("connection refused")
        obj = self.objects.get(name)
        return copy.deepcopy(obj) if obj else None

    async def cancel(self, name: str, *, resource_version: str) -> dict[str, Any] | None:
        if self.down:
            raise StoreUnavailableError("connection refused")
        obj = self.objects.get(name)
        if obj is None:
            return None
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise StaleVersionError(name)
        obj["spec"]["cancel"] = True
        self._stamp(obj)
        return copy.deepcopy(obj)

    async def ping(self) -> None:
        if self.down:
            raise StoreUnavailableError("connection refused")

    def set_status(self, name: str, status: dict[str, Any], *, watch: bool = True) -> None:
        """Play the operator: write a status and let the 'watch' deliver it to the cache
        (`watch=False`: the watch has not delivered it yet)."""
        obj = self.objects[name]
        obj["status"] = status
        self._stamp(obj)
        if watch:
            self.cache.informer.handle_event({"type": "MODIFIED", "object": copy.deepcopy(obj)})


def make_settings(**overrides: Any) -> WebhookSettings:
    base: dict[str, Any] = dict(
        namespace="ns",
        tokens=(TOKEN, "second-token"),
        format_rules=(
            FormatRule(bucket="rules", prefix="", value=ExportFormat.CSV_GZ),
            FormatRule(bucket="rules", prefix="reports/", value=ExportFormat.PARQUET),
        ),
        eventbridge_api_keys=("eb-key",),
        # The buckets the samples use (tests/unit/webhook/test_security.py narrows them).
        allowed_sources=tuple(f"s3://{bucket}/" for bucket in TEST_SOURCE_BUCKETS),
        allowed_destinations=("s3://out/", "s3://exports-output/"),
        s3_endpoint_url="http://127.0.0.1:9",
        s3_region="us-east-1",
        access_log=False,
    )
    return WebhookSettings(**{**base, **overrides})


@dataclasses.dataclass
class Harness:
    client: TestClient[Any, Any]
    store: FakeStore
    cache: ExportCache


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static credentials for presigning (local CPU work; no request leaves the process)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_harness(aiohttp_client: Any, aws_env: None) -> MakeHarness:
    async def make(**overrides: Any) -> Harness:
        cache = ExportCache(namespace="ns")
        cache.informer.replace([], resource_version="1")  # listed: synced, empty
        store = FakeStore(cache)
        app = create_app(make_settings(**overrides), store=store, cache=cache)
        return Harness(client=await aiohttp_client(app), store=store, cache=cache)

    return make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()
