"""The middleware: request ids and access logs, metrics, and errors as problem documents."""

from __future__ import annotations

import logging
import os
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from export_operator.jsonlogs import request_id
from export_operator.webhook.http import route_of
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SETTINGS

log = logging.getLogger("export_operator.webhook.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")

_HTTP_CODES = {
    404: ProblemCode.NOT_FOUND,
    405: ProblemCode.METHOD_NOT_ALLOWED,
    413: ProblemCode.BODY_TOO_LARGE,
    415: ProblemCode.UNSUPPORTED_MEDIA_TYPE,
}


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (or keep a sane incoming `X-Request-Id`), answer errors as problem
    documents (`answer`), time the request, count it and log one JSON line for it. One
    middleware, not two: each layer costs a wrapper and a coroutine per request."""
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if _REQUEST_ID.match(incoming) else os.urandom(16).hex()
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await answer(request, handler)
        status = response.status
        response.headers["X-Request-Id"] = rid
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        request.app[METRICS].http.observe(
            route=route, method=request.method, code=status, seconds=elapsed
        )
        if request.app[SETTINGS].http.access_log:
            log.info(
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 3), "route": route},
            )
        request_id.reset(token)


async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, with `Problem`s, aiohttp's HTTP errors and unexpected exceptions
    rendered as problem+json."""
    try:
        return await handler(request)
    except Problem as raised:
        if raised.limited is not None:
            request.app[METRICS].limited.labels(owner=raised.limited, reason=raised.code).inc()
        return raised.response(instance=request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ProblemCode.INVALID_REQUEST)
        response = Problem(code, exc.reason, status=exc.status).response(instance=request.path)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return Problem(ProblemCode.INTERNAL, "internal error").response(instance=request.path)


async def public_location(request: web.Request, response: web.StreamResponse) -> None:
    """`Location` as clients reach it: the configured public URL (a prefix behind an Ingress,
    or an absolute base) before the path the webhook serves."""
    base = request.app[SETTINGS].http.public_url
    location = response.headers.get("Location", "")
    if base and location.startswith("/"):
        response.headers["Location"] = base + location
