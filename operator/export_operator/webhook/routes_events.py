"""`POST /v1/events/s3`: S3 object-created notifications in every supported envelope.

Who may call: SNS by signature (header `x-amz-sns-message-type`), EventBridge API destinations by
their API-key header, everyone else (S3 via a relay, SNS raw delivery, MinIO) by bearer token.
Every record is validated before the first ExportJob is created, so a bad event creates nothing.
Each object version and format maps to one deterministic name; an existing name is success.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiohttp import web

from export_operator import resource
from export_operator.principals import Principal, Principals
from export_operator.resource import ExportFormat, S3Location
from export_operator.webhook import auth
from export_operator.webhook.create import Stored, accepted, create_export
from export_operator.webhook.events import EventError, EventSource, ParsedEvent, parse_event
from export_operator.webhook.exports import build_export_job, parse_format, spec_for_event
from export_operator.webhook.http import parse_json_text, read_json, unauthorized
from export_operator.webhook.limits import check_queue
from export_operator.webhook.problems import Problem, ProblemCode
from export_operator.webhook.services import SERVICES, SETTINGS
from export_operator.webhook.sns import MESSAGE_TYPES, SnsError, SnsUnavailableError

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SNS_TYPE_HEADER = "x-amz-sns-message-type"
SNS_RAW_DELIVERY_HEADER = "x-amz-sns-rawdelivery"


@routes.post("/v1/events/s3")
async def post_s3_event(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    query_format = request.query.get("format")
    export_format = parse_format(query_format) if query_format is not None else None
    # SNS raw message delivery posts the S3 event itself, unsigned, still with the message-type
    # header (and `x-amz-sns-rawdelivery: true`): it is authenticated like a relay, by token.
    raw_delivery = request.headers.get(SNS_RAW_DELIVERY_HEADER, "").lower() == "true"
    principal: Principal | None
    if SNS_TYPE_HEADER in request.headers and not raw_delivery:
        from_sns = await _from_sns(request)
        if from_sns is None:
            return web.json_response({"ids": [], "ignored": [], "status": "acknowledged"})
        parsed, principal = from_sns
    else:
        principal = auth.bearer_principal(request, settings.principals)
        by_key = principal is None
        if principal is None:
            principal = auth.api_key_principal(
                request,
                header=settings.auth.eventbridge_api_key_header,
                principals=settings.principals,
            )
        if principal is None:
            reason = "missing" if auth.bearer_token(request) is None else "invalid"
            raise unauthorized(
                request, reason=reason, detail="a bearer token or EventBridge API key is required"
            )
        parsed = _parse(await read_json(request, allow_text=raw_delivery), source=EventSource.S3)
        if by_key and parsed.source != EventSource.EVENTBRIDGE:
            raise unauthorized(
                request,
                reason="api-key-scope",
                detail="the EventBridge API key is accepted for EventBridge events only",
            )
    return await _store(request, parsed, principal=principal, export_format=export_format)


def _parse(body: Any, *, source: EventSource) -> ParsedEvent:
    try:
        return parse_event(body, source=source)
    except EventError as exc:
        code = ProblemCode.INVALID_S3_KEY if exc.bad_key else ProblemCode.UNSUPPORTED_EVENT
        raise Problem(code, str(exc)) from None


async def _from_sns(request: web.Request) -> tuple[ParsedEvent, Principal] | None:
    """Verify an SNS message; confirm subscriptions; the S3 event of a Notification and the
    principal its topic belongs to."""
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    kind = request.headers[SNS_TYPE_HEADER]
    if not settings.principals.topic_arns:
        raise Problem(
            ProblemCode.SNS_DISABLED,
            "SNS is off on this webhook: no topic ARNs are configured "
            "(EXPORTJOBS_WEBHOOK_SNS_TOPIC_ARNS / the chart's auth.snsTopicArns)",
        )
    if kind not in MESSAGE_TYPES:
        raise Problem(ProblemCode.UNSUPPORTED_EVENT, f"unknown SNS message type {kind!r}")
    message = await read_json(request, allow_text=True)  # SNS posts text/plain
    if not isinstance(message, dict) or message.get("Type") != kind:
        raise Problem(ProblemCode.INVALID_REQUEST, "the SNS message Type does not match its header")
    try:
        await services.sns.verify(message)
        if kind == "SubscriptionConfirmation":
            await services.sns.confirm(message)
            log.info("SNS subscription confirmed", extra={"topic": message.get("TopicArn")})
            return None
    except SnsError as exc:
        raise unauthorized(request, reason="sns-signature", detail=str(exc)) from None
    except SnsUnavailableError as exc:
        # AWS's side did not answer: SNS retries on 5xx, and this is not the API server.
        raise Problem(
            ProblemCode.SNS_FETCH_FAILED, str(exc), retry_after=settings.http.retry_after_seconds
        ) from None
    if kind == "UnsubscribeConfirmation":
        log.info("SNS subscription ended", extra={"topic": message.get("TopicArn")})
        return None
    inner = parse_json_text(str(message.get("Message", "")), what="SNS Message")
    principal = settings.principals.for_topic(str(message.get("TopicArn")))
    assert principal is not None  # verify() accepts configured topics only
    return _parse(inner, source=EventSource.SNS), principal


async def _store(
    request: web.Request,
    parsed: ParsedEvent,
    *,
    principal: Principal,
    export_format: ExportFormat | None,
) -> web.Response:
    settings = request.app[SETTINGS]
    if len(parsed.records) > settings.events.max_event_records:
        raise Problem(
            ProblemCode.TOO_MANY_RECORDS,
            f"the event carries {len(parsed.records)} object records; at most "
            f"{settings.events.max_event_records} per request",
        )
    request.app[SERVICES].rate.admit(principal, cost=max(1, len(parsed.records)))
    bodies = []
    adding: collections.Counter[Principal] = collections.Counter()
    for record in parsed.records:
        location = record.location
        if settings.bounds.is_output(location):
            # An export's own output (or another's): never the input of a new export.
            parsed.ignored.append(f"output object {location.uri}")
            continue
        chosen = export_format or settings.format_for(bucket=location.bucket, key=location.key)
        if chosen is None:
            raise Problem(
                ProblemCode.UNKNOWN_FORMAT,
                f"no format for {location.uri}: pass ?format= or configure a format rule",
            )
        spec = spec_for_event(
            record,
            export_format=chosen,
            default_destination=settings.destination_uri,
            callback_url=settings.callback_for(bucket=location.bucket, key=location.key),
            owner=(owner := _owner(principal, settings.principals, location)).name,
        )
        adding[owner] += 1
        settings.bounds.check_spec(spec)
        name = resource.export_name_for_object(
            bucket=location.bucket, key=location.key, version=record.version, export_format=chosen
        )
        size = {} if record.size is None else {resource.ANNOTATION_SOURCE_SIZE: str(record.size)}
        bodies.append(
            build_export_job(
                name=name,
                namespace=settings.namespace,
                spec=spec,
                source_kind=parsed.source,
                annotations=size,
            )
        )
    if not bodies:
        return web.json_response({"ids": [], "ignored": parsed.ignored, "status": "ignored"})
    for owner, count in adding.items():
        check_queue(
            owner,
            unfinished=request.app[SERVICES].cache.unfinished(owner.name),
            adding=count,
            retry_after=settings.http.retry_after_seconds,
        )
    stored = await _create_all(request, bodies, source_kind=parsed.source)
    ids = list(dict.fromkeys(s.name for s in stored))
    return accepted(
        {
            "ids": ids,
            "created": sum(s.created for s in stored),
            "duplicates": sum(not s.created for s in stored),
            "ignored": parsed.ignored,
            "status": "accepted",
        },
        location=f"/v1/exports/{ids[0]}" if len(ids) == 1 else None,
        poll_after=settings.http.poll_after_seconds,
    )


def _owner(caller: Principal, principals: Principals, location: S3Location) -> Principal:
    """Who owns the export of an object: the principal its event route is bound to, else the
    caller. Only the bound principal (or an admin) may post events for a bound route.

    Raises:
        Problem: 403 when another principal posts an event for a bound route.
    """
    bound = principals.bound_owner(location.bucket, location.key)
    if bound is None:
        return caller
    if bound.name != caller.name and not caller.admin:
        raise Problem(
            ProblemCode.FORBIDDEN, f"events for {location.uri} belong to another principal"
        )
    return bound


async def _create_all(
    request: web.Request, bodies: list[dict[str, Any]], *, source_kind: EventSource
) -> list[Stored]:
    """Create every body with at most `create_concurrency` calls in flight: a large event must
    not queue hundreds of calls on the API client, where they would time out waiting. The first
    failure stops the rest and is raised."""
    stored: list[Stored | None] = [None] * len(bodies)
    pending = iter(enumerate(bodies))

    async def worker() -> None:
        for index, body in pending:  # shared: each body goes to one worker
            stored[index] = await create_export(request, body=body, source_kind=source_kind)

    workers = min(request.app[SETTINGS].kube.create_concurrency, len(bodies))
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [s for s in stored if s is not None]
