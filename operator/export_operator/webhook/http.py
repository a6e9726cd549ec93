"""Request helpers shared by the route modules: reading JSON bodies and checking credentials."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from export_operator.principals import Principal
from export_operator.webhook import auth
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SERVICES, SETTINGS

CONTENT_CODINGS = {"identity": 0, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}
"""Request content codings read (RFC 9110 §8.4), with their zlib window bits; anything else is
415 with `Accept-Encoding` naming these. aiohttp's own decoding is off (the app's
`auto_decompress=False`) so that an unknown coding is a problem document, not a text/plain 400,
and a compressed body is held to the size limit after decompression."""
CHARSETS = {"utf-8", "utf8"}
"""JSON is UTF-8 (RFC 8259 §8.1): a `charset` parameter, if given, must say so."""


async def read_body(request: web.Request) -> bytes:
    """The body, decoded from its content coding, at most the size limit before and after.

    Raises:
        Problem: 415 `unsupported-media-type` for an unknown content coding, 413
            `body-too-large`, 400 `malformed-json` for a body that does not decompress.
    """
    limit = request.app[SETTINGS].http.max_body_bytes
    coding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if coding not in CONTENT_CODINGS:
        raise Problem(
            ProblemCode.UNSUPPORTED_MEDIA_TYPE,
            f"content coding {coding!r} is not supported; use gzip or none",
            headers={"Accept-Encoding": "gzip, identity"},
        )
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    timeout = request.app[SETTINGS].http.body_timeout_seconds
    try:
        if request.content.is_eof():  # all of it came with the headers (the usual case)
            raw = await request.read()
        else:
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except TimeoutError:
        # A body trickled in slowly holds a connection and a task: the caller's credentials
        # do not buy more time than anyone's.
        raise Problem(
            ProblemCode.REQUEST_TIMEOUT,
            f"the body was not received within {timeout:g} s",
            headers={"Connection": "close"},
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # A body that cannot be read as sent (broken chunked framing, ...): the client's fault.
        cause = exc.__cause__ or exc
        detail = f"the body could not be read: {type(cause).__name__}: {cause}"
        raise Problem(ProblemCode.MALFORMED_JSON, detail[:300]) from None
    if coding == "identity":
        return raw
    decoder = zlib.decompressobj(CONTENT_CODINGS[coding])
    try:
        body = decoder.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise Problem(
            ProblemCode.MALFORMED_JSON, f"the body is not valid {coding}: {exc}"
        ) from None
    if len(body) > limit:
        raise too_large(limit)
    return body


def too_large(limit: int) -> Problem:
    return Problem(ProblemCode.BODY_TOO_LARGE, f"the body exceeds {limit} bytes")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"duplicate key {twice!r}")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
"""One decoder for every body: `json.loads` with a hook builds a new one per call."""


def parse_json_text(text: str, *, what: str) -> Any:
    """Decode JSON text (`what` names it in the problem); an object with a key twice is refused,
    not last-one-wins.

    Raises:
        Problem: 400 `malformed-json`, also for nesting deeper than the parser's recursion limit.
    """
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except RecursionError:
        raise Problem(ProblemCode.MALFORMED_JSON, f"the {what} is nested too deeply") from None
    except ValueError as exc:
        raise Problem(ProblemCode.MALFORMED_JSON, f"the {what} is not JSON: {exc}") from None


async def read_json(request: web.Request, *, allow_text: bool = False) -> Any:
    """Check the content type and charset, then read and decode the JSON body (UTF-8).

    Raises:
        Problem: 415, 413 or 400 (`malformed-json`).
    """
    kind = request.content_type
    json_type = kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )
    if not json_type and not (allow_text and kind == "text/plain"):
        raise Problem(
            ProblemCode.UNSUPPORTED_MEDIA_TYPE,
            f"expected application/json, got {request.content_type!r}",
        )
    charset = request.charset
    if charset is not None and charset.lower() not in CHARSETS:
        raise Problem(
            ProblemCode.UNSUPPORTED_MEDIA_TYPE,
            f"JSON bodies are UTF-8; charset {charset!r} is not accepted",
        )
    try:
        text = (await read_body(request)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(ProblemCode.MALFORMED_JSON, f"the body is not UTF-8: {exc}") from None
    return parse_json_text(text, what="body")


def route_of(request: web.Request) -> str:
    """The route's pattern as metrics label it (`unmatched` for none)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def unauthorized(request: web.Request, *, reason: str, detail: str) -> Problem:
    """Count the failure and build the 401 problem."""
    request.app[METRICS].auth_failures.labels(route=route_of(request), reason=reason).inc()
    return Problem(
        ProblemCode.UNAUTHORIZED, detail, headers={"WWW-Authenticate": 'Bearer realm="exportjobs"'}
    )


def unavailable(request: web.Request, detail: str) -> Problem:
    """Count a 503 for an API server that is down or refused, and build its problem."""
    request.app[METRICS].api_unavailable.inc()
    retry_after = request.app[SETTINGS].http.retry_after_seconds
    return Problem(ProblemCode.UNAVAILABLE, detail, retry_after=retry_after)


def require_bearer(request: web.Request) -> Principal:
    """The principal of the request's bearer token, its request rate admitted.

    Raises:
        Problem: 401 without a configured bearer token, 429 over the principal's rate.
    """
    token = auth.bearer_token(request)
    if token is None:
        raise unauthorized(request, reason="missing", detail="a bearer token is required")
    principal = request.app[SETTINGS].principals.for_token(token)
    if principal is None:
        raise unauthorized(request, reason="invalid", detail="the bearer token is not valid")
    request.app[SERVICES].rate.admit(principal)
    return principal
