"""`/v1/exports`: request an export, read it back (from the cache), list them, cancel one."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from typing import Any

from aiohttp import web

from export_operator import resource
from export_operator.presign import own_result_uri
from export_operator.principals import Principal
from export_operator.public_view import api_view, owner_of, phase_of, status_url
from export_operator.webhook.create import accepted, create_export
from export_operator.webhook.events import EventSource
from export_operator.webhook.exports import build_export_job, canonical, parse_export_request
from export_operator.webhook.http import read_json, require_bearer, unavailable
from export_operator.webhook.limits import check_queue
from export_operator.webhook.listing import ListQuery, QueryError
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SERVICES, SETTINGS
from export_operator.webhook.store import (
    StaleVersionError,
    StoreRejectedError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")


@routes.post("/v1/exports")
async def post_export(request: web.Request) -> web.Response:
    principal = require_bearer(request)
    settings = request.app[SETTINGS]
    spec = parse_export_request(
        await read_json(request),
        dataset_uri_template=settings.dataset_uri_template,
        default_destination=settings.destination_uri,
        callback_policy=settings.callback_policy,
        owner=principal.name,
    )
    settings.bounds.check_spec(spec)
    check_queue(
        principal,
        unfinished=request.app[SERVICES].cache.unfinished(principal.name),
        adding=1,
        retry_after=settings.http.retry_after_seconds,
    )
    digest = resource.request_digest(canonical(spec))
    annotations = {resource.ANNOTATION_REQUEST_SHA256: digest}
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        if not _IDEMPOTENCY_KEY.match(key):
            raise Problem(
                ProblemCode.INVALID_REQUEST,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        name = resource.export_name_for_idempotency_key(
            key, principal=None if principal.legacy else principal.name
        )
        annotations[resource.ANNOTATION_IDEMPOTENCY] = hashlib.sha256(key.encode()).hexdigest()
    else:
        name = f"api-{os.urandom(12).hex()}"  # 24 random hex digits (cheaper than uuid4)
    body = build_export_job(
        name=name,
        namespace=settings.namespace,
        spec=spec,
        source_kind=EventSource.API,
        annotations=annotations,
    )
    stored = await create_export(request, body=body, source_kind=EventSource.API)
    obj = stored.obj
    if not stored.created:
        obj = await _existing(request, name)
        stored_digest = (obj.get("metadata", {}).get("annotations") or {}).get(
            resource.ANNOTATION_REQUEST_SHA256
        )
        if key is None or stored_digest != digest or not principal.sees(owner_of(obj)):
            raise Problem(
                ProblemCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used with a different request",
                extra={"id": name},
            )
    assert obj is not None
    return accepted(
        {"id": name, "status": phase_of(obj), "status_url": status_url(name)},
        location=status_url(name),
        poll_after=settings.http.poll_after_seconds,
    )


async def _existing(request: web.Request, name: str) -> dict[str, Any]:
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    obj = services.cache.get(name)
    if obj is not None:
        return obj
    try:
        found = await services.store.read(name)
    except StoreUnavailableError:
        found = None
    if found is None:
        # It existed a moment ago; a 503 makes the client retry, which then settles it.
        raise Problem(
            ProblemCode.UNAVAILABLE,
            "the export could not be read back; retry later",
            retry_after=settings.http.retry_after_seconds,
        )
    return found


def _require_synced(request: web.Request) -> None:
    """503 until the export cache has listed: it answers reads and cancellations."""
    if not request.app[SERVICES].cache.synced:
        raise Problem(
            ProblemCode.NOT_READY,
            "the export cache is not synced yet",
            retry_after=request.app[SETTINGS].http.retry_after_seconds,
        )


async def _find_or_404(
    request: web.Request, principal: Principal, *, when_down: int = 404
) -> dict[str, Any]:
    """The ExportJob the path names, if `principal` may see it: from the cache, else one bounded
    API read (an export created through another replica that this replica's watch has not
    delivered yet). Another principal's export is a 404 like an absent one: its existence is
    not told either.

    `when_down`: the answer to a miss the API server cannot settle: 404 (the cache's answer,
    for reads) or 503 (for a cancellation, which must not claim an export does not exist).
    """
    name = request.match_info["id"]
    _require_synced(request)
    try:
        obj = await request.app[SERVICES].lookup.get(name) if _NAME.match(name) else None
    except StoreUnavailableError:
        if when_down == 503:
            raise unavailable(request, "the export could not be read; retry later") from None
        obj = None
    if obj is None or not principal.sees(owner_of(obj)):
        raise _not_found(name)
    return obj


def _not_found(name: str) -> Problem:
    return Problem(ProblemCode.NOT_FOUND, f"no export {name!r}")


@routes.get("/v1/exports/{id}")
async def get_export(request: web.Request) -> web.Response:
    principal = require_bearer(request)
    obj = await _find_or_404(request, principal)
    download_url = None
    result_uri = ((obj.get("status") or {}).get("result") or {}).get("uri")
    if phase_of(obj) == resource.Phase.SUCCEEDED and isinstance(result_uri, str):
        download_url = await _download_url(request, obj, result_uri)
    # A presigned URL is a bearer credential: no cache (browser, proxy, CDN) may keep it.
    headers = {"Cache-Control": "no-store"} if download_url else None
    return web.json_response(api_view(obj, download_url=download_url), headers=headers)


async def _download_url(request: web.Request, obj: dict[str, Any], result_uri: str) -> str | None:
    """A presigned URL for the result, only when it lies under the export's own
    `<destination>/<id>/`: a result naming any other object (forged through the status or the
    termination message) gets no URL, a warning and a count."""
    own = own_result_uri(obj, default_destination=request.app[SETTINGS].destination_uri)
    if own is None:
        request.app[METRICS].presign_refused.inc()
        log.warning(
            "export %s: result %s is not under its own output prefix; no download URL",
            obj["metadata"]["name"],
            result_uri,
        )
        return None
    try:
        return await request.app[SERVICES].presigner.url_for(own)
    except ValueError:
        return None


@routes.get("/v1/exports")
async def list_exports(request: web.Request) -> web.Response:
    principal = require_bearer(request)
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    try:
        query = ListQuery.parse(request.query, default_limit=settings.http.page_size)
    except QueryError as exc:
        raise Problem(ProblemCode.INVALID_REQUEST, str(exc)) from None
    _require_synced(request)
    if not principal.admin:
        query = dataclasses.replace(query, owner=principal.name)
    items, token = services.cache.page(query)
    return web.json_response({"items": [api_view(obj) for obj in items], "continue": token})


CANCEL_ATTEMPTS = 3
"""Conditional cancel writes tried before giving up with 503 (each after a fresh read)."""


@routes.delete("/v1/exports/{id}")
async def cancel_export(request: web.Request) -> web.Response:
    """Cancel: `spec.cancel` set only while the export is unfinished (a write conditional on the
    resourceVersion that was read, so a completion in between is seen); a finished export is a
    409 naming its phase. A cancel that still loses the race to completion ends Succeeded
    (the operator's rule), never Cancelled with an output nothing points to."""
    principal = require_bearer(request)
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    name = request.match_info["id"]
    obj = await _find_or_404(request, principal, when_down=503)
    for _ in range(CANCEL_ATTEMPTS):
        phase = resource.Phase(phase_of(obj))
        if phase.finished:
            raise Problem(
                ProblemCode.EXPORT_FINISHED,
                f"export {name!r} has finished ({phase.value}); there is nothing to cancel",
                extra={"id": name, "phase": phase.value},
            )
        try:
            patched = await services.store.cancel(
                name, resource_version=str(obj["metadata"].get("resourceVersion", ""))
            )
        except StaleVersionError:
            fresh = await _read(request, name)
            if fresh is None:
                break
            obj = fresh
            continue
        except StoreRejectedError as exc:
            raise Problem(ProblemCode.REJECTED_BY_API_SERVER, str(exc)) from None
        except StoreUnavailableError:
            raise unavailable(
                request, "the cancellation could not be stored; retry later"
            ) from None
        if patched is None:
            break
        services.cache.upsert(patched)
        return accepted(
            api_view(patched),
            location=status_url(name),
            poll_after=settings.http.poll_after_seconds,
        )
    else:
        raise unavailable(request, "the export kept changing; retry the cancellation")
    raise _not_found(name)


async def _read(request: web.Request, name: str) -> dict[str, Any] | None:
    """A direct API read; 503 when the API server does not answer."""
    try:
        return await request.app[SERVICES].store.read(name)
    except StoreUnavailableError:
        raise unavailable(request, "the export could not be read; retry later") from None
