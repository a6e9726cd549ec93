"""Two webhook processes on different ports, one API server: an export created through one is
readable (and cancellable) through the other at once, whatever the other's watch has delivered."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cluster import LocalCluster
from tests.support.net import free_port
from tests.support.webhook_process import AUTH, TOKEN


async def _ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become ready"
        await asyncio.sleep(0.1)


@pytest.fixture
async def two_webhooks(
    cluster: LocalCluster, namespace: str, crd: str
) -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    procs: list[asyncio.subprocess.Process] = []
    urls = []
    for _ in range(2):
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "EXPORTJOBS_WEBHOOK_NAMESPACE": namespace,
            "EXPORTJOBS_WEBHOOK_TOKENS": TOKEN,
            "EXPORTJOBS_WEBHOOK_ALLOWED_SOURCES": "s3://exports-input/",
            "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
            "EXPORTJOBS_WEBHOOK_PORT": str(port),
            "EXPORTJOBS_WEBHOOK_ACCESS_LOG": "false",
            "EXPORTJOBS_WEBHOOK_LOG_LEVEL": "WARNING",
        }
        exe = Path(sys.executable).parent / "exportjobs-webhook"
        procs.append(await asyncio.create_subprocess_exec(str(exe), env=env))
        urls.append(f"http://127.0.0.1:{port}")

    async with aiohttp.ClientSession(headers=AUTH) as session:
        try:
            for url in urls:
                await _ready(session, url)
            yield session, urls
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 15)


async def test_get_on_the_other_replica_right_after_post(
    two_webhooks: tuple[aiohttp.ClientSession, list[str]],
) -> None:
    session, (first, second) = two_webhooks
    for i in range(30):
        body = {"source": f"s3://exports-input/ryw/{i}.csv", "format": "csv"}
        async with session.post(f"{first}/v1/exports", json=body) as posted:
            assert posted.status == 202
            name = (await posted.json())["id"]
        async with session.get(f"{second}/v1/exports/{name}") as got:
            assert got.status == 200, (i, await got.text())
            assert (await got.json())["id"] == name


async def test_delete_on_the_other_replica_right_after_post(
    two_webhooks: tuple[aiohttp.ClientSession, list[str]],
) -> None:
    session, (first, second) = two_webhooks
    body = {"source": "s3://exports-input/ryw/cancel.csv", "format": "csv"}
    async with session.post(f"{first}/v1/exports", json=body) as posted:
        name = (await posted.json())["id"]
    async with session.delete(f"{second}/v1/exports/{name}") as deleted:
        assert deleted.status == 202, await deleted.text()
        assert (await deleted.json())["cancel_requested"] is True
