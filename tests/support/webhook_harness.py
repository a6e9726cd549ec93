"""The webhook under test in process (aiohttp test client) over an in-memory ExportJob store:
the harness, its settings and credentials."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from export_operator.resource import ExportFormat
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
        eventbridge_api_key=("eb-key",),
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
