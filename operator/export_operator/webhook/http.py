"""Request helpers shared by the route modules: reading JSON bodies and checking credentials."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from export_operator.webhook import auth
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SETTINGS


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request) -> bytes:
    """The body, refusing one over the size limit before reading it when the length is known.

    Raises:
        Problem: 413 `body-too-large`.
    """
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None


def too_large(limit: int) -> Problem:
    return Problem(
        status=413, code=ProblemCode.BODY_TOO_LARGE, detail=f"the body exceeds {limit} bytes"
    )


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body.

    Raises:
        Problem: 400 `malformed-json`.
    """
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(
            status=400, code=ProblemCode.MALFORMED_JSON, detail=f"the body is not JSON: {exc}"
        ) from None


async def read_json(request: web.Request, *, allow_text: bool = False) -> Any:
    """Check the content type, then read and decode the JSON body.

    Raises:
        Problem: 415, 413 or 400.
    """
    allowed = is_json_type(request.content_type) or (
        allow_text and request.content_type == "text/plain"
    )
    if not allowed:
        raise Problem(
            status=415,
            code=ProblemCode.UNSUPPORTED_MEDIA_TYPE,
            detail=f"expected application/json, got {request.content_type!r}",
        )
    return parse_json(await read_body(request))


def unauthorized(request: web.Request, *, reason: str, detail: str) -> Problem:
    """Count the failure and build the 401 problem."""
    route = request.match_info.route.resource
    request.app[METRICS].auth_failures.labels(
        route=route.canonical if route else "unmatched", reason=reason
    ).inc()
    return Problem(
        status=401,
        code=ProblemCode.UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer realm="exportjobs"'},
    )


def require_bearer(request: web.Request) -> None:
    """Raises a 401 problem unless the request carries a configured bearer token."""
    if auth.bearer_token(request) is None:
        raise unauthorized(request, reason="missing", detail="a bearer token is required")
    if not auth.has_valid_bearer(request, request.app[SETTINGS].tokens):
        raise unauthorized(request, reason="invalid", detail="the bearer token is not valid")
