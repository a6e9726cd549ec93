"""The OpenAPI 3.1 document of the webhook's HTTP API, served at /openapi.json.

The schemas are generated from the models (`export_operator.models` for requests,
`webhook.schemas` for responses); this module adds the routes, headers and status codes. The
live service is checked against it by schemathesis (tests/cluster/webhook).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from pydantic import BaseModel

from export_operator import contract_schemas, models
from export_operator.resource import MAX_NAME_LENGTH
from export_operator.webhook import schemas
from export_operator.webhook.problems import PROBLEM_CONTENT_TYPE, TYPE_BASE
from export_operator.webhook.sns import MESSAGE_TYPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(
    description: str,
    schema: str,
    *,
    media: str = "application/json",
    location: bool = False,
    retry_after: bool = False,
) -> dict[str, Any]:
    """A response with a body of `schema`, and the headers asked for."""
    headers: dict[str, Any] = {}
    if location:
        headers["Location"] = {
            "description": "The status URL of the export (after EXPORTJOBS_WEBHOOK_PUBLIC_URL, "
            "if set).",
            "required": True,
            "schema": {"type": "string"},
        }
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    response = {"description": description, "content": {media: {"schema": _ref(schema)}}}
    return {**response, "headers": headers} if headers else response


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    return _json(description, "Problem", media=PROBLEM_CONTENT_TYPE, retry_after=retry_after)


def _parameter(
    name: str, where: str, schema: dict[str, Any], description: str | None = None
) -> dict[str, Any]:
    """A parameter `in` the path (then required), query or headers."""
    parameter: dict[str, Any] = {"name": name, "in": where, "schema": schema}
    if description:
        parameter["description"] = description
    return {**parameter, "required": True} if where == "path" else parameter


_UNAVAILABLE = _problem(
    "The Kubernetes API server is down or refused; nothing is promised stored. Retry after "
    "Retry-After seconds.",
    retry_after=True,
)
_AUTHED = {
    "401": _problem("Missing or invalid credentials; nothing was created."),
    "429": _problem(
        "Over the principal's request rate (`rate-limited`), or, for a create, over its queue "
        "cap (`queue-full`); nothing was created.",
        retry_after=True,
    ),
}
_NOT_SYNCED = _problem("The cache is not synced yet.", retry_after=True)
_BAD_BODY = {
    "400": _problem("Malformed JSON (also nested too deeply), or a body that does not decode."),
    **_AUTHED,
    "408": _problem("The body was not received in time (`request-timeout`)."),
    "413": _problem("The body (or the event's record count) is larger than the configured limit."),
    "415": _problem("The content type is not JSON."),
    "422": _problem(
        "Invalid request: unknown format, bad S3 URI or key, unknown fields, unsupported event, "
        "a source or destination outside the allowed prefixes (`source-not-allowed`, "
        "`destination-not-allowed`), or an Idempotency-Key reused with another body (code "
        "`idempotency-key-reused`)."
    ),
    "503": _UNAVAILABLE,
}

REQUEST_MODELS: tuple[type[BaseModel], ...] = (models.ExportRequest,)
"""Request bodies: absent fields are left out, never null (the structural rendering)."""
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    schemas.Problem,
    schemas.Accepted,
    *schemas.Export.PARTS,
    schemas.ExportList,
    schemas.EventResult,
    schemas.S3Event,
)


def component_schemas() -> dict[str, Any]:
    """`components.schemas`, generated from the models; `Export` as `allOf` its parts."""
    ref = "#/components/schemas/{model}"
    return {
        **contract_schemas.json_schemas(
            [(m, "validation") for m in REQUEST_MODELS], ref_template=ref
        ),
        **contract_schemas.json_schemas(
            [(m, "serialization") for m in RESPONSE_MODELS], ref_template=ref, nullable=True
        ),
        "Export": {
            "description": inspect.cleandoc(schemas.Export.__doc__ or ""),
            "allOf": [_ref(part.__name__) for part in schemas.Export.PARTS],
            "unevaluatedProperties": False,
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "exportjobs webhook",
            "version": "v1",
            "description": "Requests exports as ExportJobs and reads them back. Errors are "
            f"application/problem+json; `type` is {TYPE_BASE}<code>.",
        },
        "components": {
            "schemas": component_schemas(),
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before polling (202) or retrying (503).",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "eventbridgeApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "EventBridge API destinations; the header name is "
                    "configurable (EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_HEADER).",
                },
            },
        },
        "paths": {
            "/v1/exports": {
                "post": {
                    "operationId": "createExport",
                    "summary": "Request an export; 202 once its ExportJob is stored.",
                    "security": bearer,
                    "parameters": [
                        _parameter(
                            "Idempotency-Key",
                            "header",
                            {"type": "string", "pattern": "^[!-~]{1,255}$"},
                            "The same key and body give the same id; another body gives 422.",
                        )
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ExportRequest")}},
                    },
                    "responses": {
                        "202": _json("Stored.", "Accepted", location=True, retry_after=True),
                        **_BAD_BODY,
                    },
                },
                "get": {
                    "operationId": "listExports",
                    "summary": "List exports (from the watch-fed cache), newest first; a continue "
                    "token stays valid whatever is created or deleted in between.",
                    "security": bearer,
                    "parameters": [
                        _parameter("phase", "query", _ref("Phase")),
                        _parameter(
                            "limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}
                        ),
                        _parameter("continue", "query", {"type": "string"}),
                        _parameter(
                            "source_prefix",
                            "query",
                            {"type": "string", "pattern": "^s3://", "maxLength": 2048},
                            "Only exports whose source URI starts with this.",
                        ),
                        _parameter(
                            "created_since",
                            "query",
                            {"type": "string", "format": "date-time"},
                            "Only exports created at or after this time.",
                        ),
                    ],
                    "responses": {
                        "200": _json("One page of exports.", "ExportList"),
                        **_AUTHED,
                        "422": _problem(
                            "Invalid phase, limit, continue token, source_prefix or created_since."
                        ),
                        "503": _NOT_SYNCED,
                    },
                },
            },
            "/v1/exports/{id}": {
                "parameters": [
                    _parameter(
                        "id",
                        "path",
                        {"type": "string", "maxLength": MAX_NAME_LENGTH},
                        "The export id (its ExportJob's name).",
                    )
                ],
                "get": {
                    "operationId": "getExport",
                    "summary": "One export's phase, progress, error and result (with a presigned "
                    "download URL once it succeeded).",
                    "security": bearer,
                    "responses": {
                        "200": {
                            **_json("The export.", "Export"),
                            "headers": {
                                "Cache-Control": {
                                    "description": "no-store when the body carries a presigned "
                                    "download URL.",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        **_AUTHED,
                        "404": _problem("No such export."),
                        "503": _NOT_SYNCED,
                    },
                },
                "delete": {
                    "operationId": "cancelExport",
                    "summary": "Cancel an unfinished export (sets spec.cancel): it ends "
                    "Cancelled, or Succeeded when it finished first.",
                    "security": bearer,
                    "responses": {
                        "202": _json(
                            "Cancellation stored.", "Export", location=True, retry_after=True
                        ),
                        **_AUTHED,
                        "404": _problem("No such export."),
                        "409": _problem(
                            "The export has finished (code `export-finished`, its `phase` "
                            "given); nothing was changed."
                        ),
                        "422": _problem("The API server refused the change."),
                        "503": _UNAVAILABLE,
                    },
                },
            },
            "/v1/events/s3": {
                "post": {
                    "operationId": "postS3Event",
                    "summary": "S3 object-created notifications: one export per record and "
                    "format; redeliveries map to the same id.",
                    "description": "SNS messages are authenticated by signature, EventBridge "
                    "events by API key, everything else by bearer token.",
                    "security": [*bearer, {"eventbridgeApiKey": []}, {}],
                    "parameters": [
                        _parameter(
                            "format",
                            "query",
                            _ref("ExportFormat"),
                            "Output format; default from the bucket/prefix rules.",
                        ),
                        _parameter(
                            "x-amz-sns-message-type",
                            "header",
                            {"type": "string", "enum": list(MESSAGE_TYPES)},
                        ),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("S3Event")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json("Acknowledged; nothing to create.", "EventResult"),
                        "202": _json(
                            "Stored (or already stored).", "EventResult", retry_after=True
                        ),
                        **_BAD_BODY,
                        "403": _problem(
                            "SNS is off (no topic ARNs are configured), or the object's event "
                            "route belongs to another principal."
                        ),
                        "502": _problem(
                            "The SNS signing certificate or SubscribeURL could not be fetched.",
                            retry_after=True,
                        ),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness.",
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: cache synced and the API server answers.",
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": _problem("Not ready.", retry_after=True),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (exportjobs_webhook_*).",
                    "responses": {
                        "200": {
                            "description": "Metrics in the text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.1 document."}},
                }
            },
        },
    }
