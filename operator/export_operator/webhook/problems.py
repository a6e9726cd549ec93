"""Errors as RFC 9457 problem documents (`application/problem+json`) with a stable `code`.

Handlers raise `Problem`; the error middleware renders it. Each code has its HTTP status and
title, and the `type` URI is derived from it, so clients can switch on either.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://exportjobs.dev/problems/"


class ProblemCode(enum.StrEnum):
    """Every problem the API can answer with, its status and title; part of the contract (see
    /openapi.json)."""

    status: int
    phrase: str
    """The problem document's `title`."""

    def __new__(cls, value: str, status: int, phrase: str) -> ProblemCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.phrase = phrase
        return member

    UNAUTHORIZED = "unauthorized", 401, "Missing or invalid credentials"
    FORBIDDEN = "forbidden", 403, "Not allowed"
    NOT_FOUND = "not-found", 404, "Not found"
    METHOD_NOT_ALLOWED = "method-not-allowed", 405, "Method not allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type", 415, "Unsupported content type"
    BODY_TOO_LARGE = "body-too-large", 413, "Request body too large"
    REQUEST_TIMEOUT = "request-timeout", 408, "The request body was not received in time"
    MALFORMED_JSON = "malformed-json", 400, "Malformed JSON"
    INVALID_REQUEST = "invalid-request", 422, "Invalid request"
    UNKNOWN_FORMAT = "unknown-format", 422, "Unknown or missing export format"
    INVALID_S3_URI = "invalid-s3-uri", 422, "Invalid S3 URI"
    INVALID_S3_KEY = "invalid-s3-key", 422, "Invalid S3 object key"
    INVALID_CALLBACK_URL = "invalid-callback-url", 422, "Callback URL not allowed"
    UNSUPPORTED_EVENT = "unsupported-event", 422, "Unsupported event"
    INVALID_SIGNATURE = "invalid-signature", 401, "Invalid SNS message signature"
    SNS_DISABLED = "sns-disabled", 403, "SNS is not accepted: no topic ARNs are configured"
    SNS_FETCH_FAILED = (
        "sns-fetch-failed",
        502,
        "The SNS certificate or SubscribeURL could not be fetched",
    )
    SOURCE_NOT_ALLOWED = (
        "source-not-allowed",
        422,
        "The source is outside the allowed source prefixes",
    )
    DESTINATION_NOT_ALLOWED = (
        "destination-not-allowed",
        422,
        "The destination is outside the allowed prefixes",
    )
    TOO_MANY_RECORDS = (
        "too-many-records",
        413,
        "The event has more records than one request may carry",
    )
    IDEMPOTENCY_CONFLICT = (
        "idempotency-key-reused",
        422,
        "Idempotency-Key reused with a different request",
    )
    RATE_LIMITED = "rate-limited", 429, "Too many requests from this principal; retry later"
    QUEUE_FULL = (
        "queue-full",
        429,
        "This principal has as many unfinished exports as it may queue",
    )
    EXPORT_FINISHED = ("export-finished", 409, "The export has finished and cannot be cancelled")
    REJECTED_BY_API_SERVER = (
        "rejected-by-api-server",
        422,
        "The Kubernetes API server rejected the ExportJob",
    )
    UNAVAILABLE = (
        "api-server-unavailable",
        503,
        "The Kubernetes API server is unavailable; retry later",
    )
    NOT_READY = "not-ready", 503, "Not ready"
    INTERNAL = "internal", 500, "Internal error"


class Problem(Exception):  # noqa: N818 - the RFC 9457 name
    """An error answered to the client as a problem document (status: the code's, unless given).

    `retry_after`: seconds, sent as `Retry-After`; `limited`: the principal whose own limit
    refused the request (counted by principal in `exportjobs_webhook_limited_total`; not sent).
    """

    def __init__(
        self,
        code: ProblemCode,
        detail: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        limited: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status or code.status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
        self.extra = extra or {}
        self.limited = limited

    def response(self, *, instance: str | None = None) -> web.Response:
        """Render as an `application/problem+json` response."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.code.value,
            "title": self.code.phrase,
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
