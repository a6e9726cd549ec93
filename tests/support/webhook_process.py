"""The webhook as a process against the real API server, and a proxy in front of the API server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from export_operator.webhook.app import create_app
from export_operator.webhook.settings import WebhookSettings
from tests.support.cluster import LocalCluster
from tests.support.net import free_port

TOKEN = "cluster-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclasses.dataclass
class RunningWebhook:
    url: str
    app: web.Application
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        """(status, JSON body or text, headers)."""
        headers = {**AUTH, **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.url + path, headers=headers, **kwargs
        ) as response:
            text = await response.text()
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = text
            return response.status, body, response.headers


StartWebhook = Callable[..., Awaitable[RunningWebhook]]


class ApiProxy:
    """A TCP proxy to the API server (TLS passes through untouched). `cut()` closes every
    connection and refuses new ones, like a crashed API server; `freeze()` accepts but forwards
    nothing, like a hung one; `restore()` ends either."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if self.mode == "down":  # cut while this connection was being opened
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        self.mode = "down"
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def freeze(self) -> None:
        self.mode = "frozen"
        self._flowing.clear()

    async def restore(self) -> None:
        self.mode = "up"
        self._flowing.set()
        if self._server is None or not self._server.is_serving():
            await self.start(self.port)

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            await self._server.wait_closed()


def kubeconfig_via(original: Path, server: str, target: Path) -> Path:
    """A copy of `original` whose cluster server is `server` (same CA: the API server's
    certificate names 127.0.0.1, whatever the port)."""
    config = yaml.safe_load(original.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = server
    target.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture
async def start_webhook(
    cluster: LocalCluster, namespace: str, crd: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartWebhook]:
    """Start the real app on a free local port; `kubeconfig=` points it at another server."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        *, kubeconfig: Path | None = None, wait_ready: bool = True, **overrides: Any
    ) -> RunningWebhook:
        values: dict[str, Any] = {
            "namespace": namespace,
            "tokens": (TOKEN,),
            "allowed_sources": ("s3://exports-input/", "s3://datasets/"),
            "allowed_destinations": ("s3://exports-output/",),
            "s3_endpoint_url": cluster.s3.endpoint_url,
            "s3_region": cluster.s3.region,
            "api_timeout_seconds": 5.0,
            "retry_after_seconds": 3,
            "access_log": False,
        }
        settings = WebhookSettings(**{**values, **overrides})
        if kubeconfig is not None:
            monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        app = create_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        session = aiohttp.ClientSession()
        sessions.append(session)
        running = RunningWebhook(url=f"http://127.0.0.1:{port}", app=app, session=session)
        if wait_ready:
            deadline = time.monotonic() + 20
            while (await running.request("GET", "/readyz"))[0] != 200:
                assert time.monotonic() < deadline, "the webhook did not become ready"
                await asyncio.sleep(0.1)
        return running

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()
