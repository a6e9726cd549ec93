"""Storing ExportJobs: one create, with AlreadyExistsError and API-server failures sorted out.

Shared by `POST /v1/exports` and `POST /v1/events/s3`; both answer 202 only after `create_export`
returned, that is after the API server stored the object (or holds it already).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from export_operator.resource import NO_OWNER_LABEL
from export_operator.webhook.http import unavailable
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import METRICS, SERVICES
from export_operator.webhook.store import (
    AlreadyExistsError,
    StoreRejectedError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stored:
    name: str
    created: bool
    """False when the name existed already (a redelivery or a replay)."""
    obj: dict[str, Any] | None


async def create_export(request: web.Request, *, body: dict[str, Any], source_kind: str) -> Stored:
    """Create `body`; an existing object of the same name counts as stored.

    Raises:
        Problem: 422 when the API server rejects the object, 503 when it is unavailable.
    """
    services, metrics = request.app[SERVICES], request.app[METRICS]
    name = body["metadata"]["name"]
    try:
        created = await services.store.create(body)
    except AlreadyExistsError:
        metrics.dedup_hits.labels(source=source_kind).inc()
        return Stored(name=name, created=False, obj=None)
    except StoreRejectedError as exc:
        raise Problem(ProblemCode.REJECTED_BY_API_SERVER, str(exc)) from None
    except StoreUnavailableError as exc:
        log.warning("ExportJob %s not stored: %s", name, exc)
        raise unavailable(request, "the export could not be stored now; retry later") from None
    services.cache.upsert(created)
    services.lookup.forget(name)
    owner = str(body["spec"].get("owner") or NO_OWNER_LABEL)  # a configured principal's name
    metrics.count_created(source=source_kind, owner=owner)
    log.info("ExportJob created", extra={"export": name, "source_kind": source_kind})
    return Stored(name=name, created=True, obj=created)


def accepted(payload: dict[str, Any], *, location: str | None, poll_after: int) -> web.Response:
    """202 with `Retry-After` (when to poll) and, for one export, its `Location`."""
    headers = {"Retry-After": str(poll_after)}
    if location:
        headers["Location"] = location
    return web.json_response(payload, status=202, headers=headers)
