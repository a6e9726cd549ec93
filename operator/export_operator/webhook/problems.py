"""Errors as RFC 9457 problem documents (`application/problem+json`) with a stable `code`.

Handlers raise `Problem`; the error middleware renders it. The `type` URI is derived from the
code, so clients can switch on either.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://exportjobs.dev/problems/"


class ProblemCode(enum.StrEnum):
    """Every problem the API can answer with; part of the contract (see /openapi.json)."""

    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    BODY_TOO_LARGE = "body-too-large"
    REQUEST_TIMEOUT = "request-timeout"
    MALFORMED_JSON = "malformed-json"
    INVALID_REQUEST = "invalid-request"
    UNKNOWN_FORMAT = "unknown-format"
    INVALID_S3_URI = "invalid-s3-uri"
    INVALID_S3_KEY = "invalid-s3-key"
    INVALID_CALLBACK_URL = "invalid-callback-url"
    UNSUPPORTED_EVENT = "unsupported-event"
    INVALID_SIGNATURE = "invalid-signature"
    SNS_DISABLED = "sns-disabled"
    SNS_FETCH_FAILED = "sns-fetch-failed"
    SOURCE_NOT_ALLOWED = "source-not-allowed"
    DESTINATION_NOT_ALLOWED = "destination-not-allowed"
    TOO_MANY_RECORDS = "too-many-records"
    IDEMPOTENCY_CONFLICT = "idempotency-key-reused"
    RATE_LIMITED = "rate-limited"
    QUEUE_FULL = "queue-full"
    EXPORT_FINISHED = "export-finished"
    REJECTED_BY_API_SERVER = "rejected-by-api-server"
    UNAVAILABLE = "api-server-unavailable"
    NOT_READY = "not-ready"
    INTERNAL = "internal"


TITLES: dict[ProblemCode, str] = {
    ProblemCode.UNAUTHORIZED: "Missing or invalid credentials",
    ProblemCode.FORBIDDEN: "Not allowed",
    ProblemCode.NOT_FOUND: "Not found",
    ProblemCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ProblemCode.UNSUPPORTED_MEDIA_TYPE: "Unsupported content type",
    ProblemCode.BODY_TOO_LARGE: "Request body too large",
    ProblemCode.REQUEST_TIMEOUT: "The request body was not received in time",
    ProblemCode.MALFORMED_JSON: "Malformed JSON",
    ProblemCode.INVALID_REQUEST: "Invalid request",
    ProblemCode.UNKNOWN_FORMAT: "Unknown or missing export format",
    ProblemCode.INVALID_S3_URI: "Invalid S3 URI",
    ProblemCode.INVALID_S3_KEY: "Invalid S3 object key",
    ProblemCode.INVALID_CALLBACK_URL: "Callback URL not allowed",
    ProblemCode.UNSUPPORTED_EVENT: "Unsupported event",
    ProblemCode.INVALID_SIGNATURE: "Invalid SNS message signature",
    ProblemCode.SNS_DISABLED: "SNS is not accepted: no topic ARNs are configured",
    ProblemCode.SNS_FETCH_FAILED: "The SNS certificate or SubscribeURL could not be fetched",
    ProblemCode.SOURCE_NOT_ALLOWED: "The source is outside the allowed source prefixes",
    ProblemCode.DESTINATION_NOT_ALLOWED: "The destination is outside the allowed prefixes",
    ProblemCode.TOO_MANY_RECORDS: "The event has more records than one request may carry",
    ProblemCode.IDEMPOTENCY_CONFLICT: "Idempotency-Key reused with a different request",
    ProblemCode.RATE_LIMITED: "Too many requests from this principal; retry later",
    ProblemCode.QUEUE_FULL: "This principal has as many unfinished exports as it may queue",
    ProblemCode.EXPORT_FINISHED: "The export has finished and cannot be cancelled",
    ProblemCode.REJECTED_BY_API_SERVER: "The Kubernetes API server rejected the ExportJob",
    ProblemCode.UNAVAILABLE: "The Kubernetes API server is unavailable; retry later",
    ProblemCode.NOT_READY: "Not ready",
    ProblemCode.INTERNAL: "Internal error",
}


class Problem(Exception):  # noqa: N818 - the RFC 9457 name
    """An error answered to the client as a problem document."""

    def __init__(
        self,
        *,
        status: int,
        code: ProblemCode,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        limited: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}
        self.limited = limited
        """The principal whose own limit refused the request (counted by principal in
        `exportjobs_webhook_limited_total`; not sent)."""

    def response(self, *, instance: str | None = None) -> web.Response:
        """Render as an `application/problem+json` response."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.code.value,
            "title": TITLES[self.code],
            "status": self.status,
            "code": self.code.value,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def unavailable(detail: str, *, retry_after: int) -> Problem:
    """503 with Retry-After: the API server is down, slow or refused to store the request."""
    return Problem(
        status=503,
        code=ProblemCode.UNAVAILABLE,
        detail=detail,
        headers={"Retry-After": str(retry_after)},
    )


def invalid(
    detail: str,
    *,
    code: ProblemCode = ProblemCode.INVALID_REQUEST,
    extra: dict[str, Any] | None = None,
) -> Problem:
    """422: the request is well-formed JSON but asks for something invalid."""
    return Problem(status=422, code=code, detail=detail, extra=extra)
