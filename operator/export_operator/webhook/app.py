"""The application factory: routes, middlewares, typed state and start-up/clean-up of clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from export_operator.kube import KubeClient
from export_operator.presign import Presigner
from export_operator.webhook import middleware, routes_events, routes_exports, routes_ops
from export_operator.webhook.cache import ExportCache
from export_operator.webhook.lookup import MissLookup
from export_operator.webhook.metrics import WebhookMetrics
from export_operator.webhook.services import METRICS, SERVICES, SETTINGS, Services
from export_operator.webhook.settings import WebhookSettings
from export_operator.webhook.sns import SnsVerifier
from export_operator.webhook.store import ExportStore, KubeExportStore

log = logging.getLogger(__name__)


def create_app(
    settings: WebhookSettings,
    *,
    store: ExportStore | None = None,
    cache: ExportCache | None = None,
) -> web.Application:
    """Build the webhook application.

    Args:
        settings: the webhook's settings.
        store: where ExportJobs are stored; default the API server (a client is opened at
            start-up and closed at clean-up, with a watch feeding the cache).
        cache: the cache `GET` reads; given together with `store` by unit tests, which then
            keep it filled themselves.
    """
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[middleware.observe],
        # Content codings are decoded by webhook.http.read_body (415 problem for unknown ones).
        # A request line up to 32 KiB: a source_prefix of 2,048 characters, percent-encoded,
        # takes up to 24 KiB (aiohttp's 8,190 would answer it itself, in plain text).
        handler_args={"auto_decompress": False, "max_line_size": 32768},
    )
    app[SETTINGS] = settings
    app[METRICS] = WebhookMetrics()
    if cache is None:
        cache = ExportCache(
            namespace=settings.namespace,
            watch_timeout=settings.kube.watch_timeout_seconds,
            request_timeout=settings.kube.api_timeout_seconds * 4,
        )
    services = Services(cache=cache)
    app[SERVICES] = services
    app.add_routes(routes_exports.routes)
    app.add_routes(routes_events.routes)
    app.add_routes(routes_ops.routes)
    app.cleanup_ctx.append(_http_session)
    if store is None:
        app.cleanup_ctx.append(_kubernetes)
    else:
        services.store = store
        _start_lookup(app)
    app.on_shutdown.append(_mark_shutting_down)
    app.on_response_prepare.append(middleware.public_location)
    return app


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """The outgoing HTTP session (SNS certificates and subscription confirmations) and the
    presigner."""
    settings, services = app[SETTINGS], app[SERVICES]
    async with aiohttp.ClientSession(headers={"User-Agent": "exportjobs-webhook"}) as session:
        services.sns = SnsVerifier(
            host_pattern=settings.sns.sns_host_pattern,
            topic_arns=settings.principals.topic_arns,
            max_age_seconds=settings.sns.sns_max_age_seconds,
            ssl_context=settings.sns.sns_ssl_context,
            session=session,
            timeout=settings.kube.api_timeout_seconds,
            port=settings.sns.sns_port,
        )
        log.info(sns_startup_line(settings))
        services.presigner = Presigner(
            endpoint_url=settings.presign.s3_endpoint_url,
            region=settings.presign.s3_region,
            expiry_seconds=settings.presign.presign_expiry_seconds,
        )
        yield


async def _kubernetes(app: web.Application) -> AsyncIterator[None]:
    """The API client, the store on it and the watch that feeds the cache."""
    settings, services = app[SETTINGS], app[SERVICES]
    # No proxy variables or ~/.netrc for the API server: they cost two thread hops per call.
    api = await KubeClient.connect(within=settings.kube.api_timeout_seconds)
    services.store = KubeExportStore(kube=api, namespace=settings.namespace)
    _start_lookup(app)
    task = asyncio.create_task(services.cache.run(api), name="exportjobs-cache-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


def _start_lookup(app: web.Application) -> None:
    services, settings = app[SERVICES], app[SETTINGS]
    services.lookup = MissLookup(
        cache=services.cache,
        read=services.store.read,
        negative_ttl=settings.kube.negative_cache_seconds,
        observe=lambda result: app[METRICS].cache_miss_reads.labels(result=result).inc(),
    )


async def _mark_shutting_down(app: web.Application) -> None:
    app[SERVICES].shutting_down = True
    log.info("shutting down: readiness off, finishing in-flight requests")


def sns_startup_line(settings: WebhookSettings) -> str:
    """The start-up log line saying whether SNS is accepted, and from which topics."""
    topics = settings.principals.topic_arns
    if topics:
        return f"SNS accepted from topics {', '.join(topics)}"
    return (
        "SNS is off: no topic ARNs configured (EXPORTJOBS_WEBHOOK_SNS_TOPIC_ARNS); "
        "SNS messages are refused with 403 sns-disabled"
    )
