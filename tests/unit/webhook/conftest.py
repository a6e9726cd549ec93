"""Fast webhook tests: the real app over an in-memory ExportJob store (no API server)."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator.webhook.app import create_app
from export_operator.webhook.cache import ExportCache
from tests.support.webhook_harness import (
    FakeStore,
    Harness,
    MakeHarness,
    make_settings,
)


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
