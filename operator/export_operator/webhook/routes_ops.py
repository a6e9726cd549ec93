"""Probes, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from export_operator.webhook import auth
from export_operator.webhook.openapi import openapi_document
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SERVICES, SETTINGS
from export_operator.webhook.store import StoreUnavailableError

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers. Says nothing about the API server on purpose (a restart
    would not fix it)."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: the ExportJob cache is synced, the API server answers, and not shutting down.

    An unauthenticated caller (the kubelet's probe, anyone who reaches the port) learns ready or
    not and which check failed, no more: the API server's error (addresses, its messages) is
    logged, and the number of cached exports is told to admin principals only."""
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    reasons = []
    if services.shutting_down:
        reasons.append("shutting down")
    if not services.cache.synced:
        reasons.append("export cache not synced")
    try:
        await asyncio.wait_for(services.store.ping(), settings.kube.api_timeout_seconds)
    except (TimeoutError, StoreUnavailableError) as exc:
        log.warning("not ready: the API server does not answer: %s", exc)
        reasons.append("API server not answering")
    if reasons:
        raise Problem(
            ProblemCode.NOT_READY, "; ".join(reasons), retry_after=settings.http.retry_after_seconds
        )
    body: dict[str, object] = {"status": "ready"}
    caller = auth.bearer_principal(request, settings.principals)
    if caller is not None and caller.admin:
        body["cached_exports"] = len(services.cache)
    return web.json_response(body)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    registry.cached_exports.set(len(request.app[SERVICES].cache))
    return web.Response(
        body=generate_latest(registry.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
