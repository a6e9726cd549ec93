"""What an export request is, and the ExportJob object that records it.

`parse_export_request` validates a `POST /v1/exports` body with `export_operator.models` into the
`ExportJobSpec` to store; `spec_for_event` does the same for one S3 object-created record;
`build_export_job` renders either as the ExportJob to create. Validation happens here, before
anything is sent to the API server, so a bad request creates nothing; errors become 422 problems
whose code names what was wrong.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from export_operator import resource
from export_operator.callbacks import CallbackPolicy
from export_operator.models import ExportJobSpec, ExportRequest
from export_operator.resource import ExportFormat
from export_operator.webhook.events import EventSource, ObjectCreated
from export_operator.webhook.problems import Problem, ProblemCode

_CODES = {code.value: code for code in ProblemCode}
_FIELD_CODES = {
    "format": ProblemCode.UNKNOWN_FORMAT,
    "source": ProblemCode.INVALID_S3_URI,
    "source.uri": ProblemCode.INVALID_S3_URI,
    "destination": ProblemCode.INVALID_S3_URI,
    "destination.uri": ProblemCode.INVALID_S3_URI,
    "callback_url": ProblemCode.INVALID_CALLBACK_URL,
}
"""The code of an error that has none of its own, by the field it is about."""


def parse_format(value: Any) -> ExportFormat:
    """An `ExportFormat` from client input, or a 422 `unknown-format` problem."""
    try:
        return ExportFormat(value)
    except ValueError:
        allowed = ", ".join(f.value for f in ExportFormat)
        raise Problem(
            ProblemCode.UNKNOWN_FORMAT, f"format must be one of {allowed}; got {value!r}"
        ) from None


def parse_export_request(
    body: Any,
    *,
    dataset_uri_template: str,
    default_destination: str | None,
    callback_policy: CallbackPolicy | None = None,
    owner: str | None = None,
) -> ExportJobSpec:
    """Validate a `POST /v1/exports` body into the spec to store; `callback_url` is checked
    against `callback_policy` (the webhook's settings); `owner` is the caller's principal.

    Raises:
        Problem: 422 naming the first thing wrong (and listing every error in `errors`).
    """
    try:
        request = ExportRequest.model_validate(
            body, context={"callback_policy": callback_policy or CallbackPolicy()}
        )
    except ValidationError as exc:
        raise problem_from(exc) from None
    try:
        return request.to_spec(
            dataset_uri_template=dataset_uri_template,
            default_destination=default_destination,
            owner=owner,
        )
    except ValidationError as exc:
        raise problem_from(exc, prefix="spec") from None


def spec_for_event(
    record: ObjectCreated,
    *,
    export_format: ExportFormat,
    default_destination: str | None,
    callback_url: str | None = None,
    owner: str | None = None,
) -> ExportJobSpec:
    """The spec an S3 object-created record asks for (`callback_url` from the settings; `owner`
    the principal the event or its route belongs to).

    Raises:
        Problem: 422 when the record's version or ETag cannot be stored.
    """
    source: dict[str, Any] = {"uri": record.location.uri}
    if record.version_id:
        source["versionId"] = record.version_id
    if record.etag:
        source["etag"] = record.etag
    spec: dict[str, Any] = {"source": source, "format": export_format}
    if default_destination:
        spec["destination"] = {"uri": default_destination}
    if callback_url:
        spec["notify"] = {"url": callback_url}
    if owner:
        spec["owner"] = owner
    try:
        return ExportJobSpec.model_validate(spec)
    except ValidationError as exc:
        raise problem_from(exc, prefix="record") from None


def problem_from(exc: ValidationError, *, prefix: str = "") -> Problem:
    """A 422 problem for a validation error: the first error decides code and detail."""
    found = exc.errors(include_url=False, include_input=False)
    errors = [
        {"field": _dotted(error["loc"], prefix), "message": error["msg"], "type": error["type"]}
        for error in found
    ]
    first = errors[0]
    code = _CODES.get(first["type"]) or _FIELD_CODES.get(_dotted(found[0]["loc"], ""))
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return Problem(code or ProblemCode.INVALID_REQUEST, detail, extra={"errors": errors})


def _dotted(loc: tuple[int | str, ...], prefix: str) -> str:
    return ".".join([prefix, *map(str, loc)] if prefix else map(str, loc))


def canonical(spec: ExportJobSpec) -> str:
    """A canonical JSON form of what was asked: equal requests give equal text (Idempotency-Key
    checks). Stored digests are of this text: it must not change."""
    source = spec.source
    return json.dumps(
        {
            "source": source.uri if source else None,
            "version_id": source.version_id if source else None,
            "etag": source.etag if source else None,
            "dataset_id": spec.dataset_id,
            "format": spec.export_format.value,
            "destination": spec.destination.uri if spec.destination else None,
            "csv": spec.csv.model_dump(exclude_unset=True) if spec.csv else {},
            "callback_url": spec.notify.url if spec.notify else None,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def build_export_job(
    *,
    name: str,
    namespace: str,
    spec: ExportJobSpec,
    source_kind: EventSource,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ExportJob object to create for `spec` (its owner also as a label), stamped with the
    time it was submitted (`exportjobs.dev/submitted-ns`)."""
    labels = {
        resource.LABEL_SOURCE_KIND: source_kind.value,
        resource.LABEL_MANAGED_BY: "exportjobs-webhook",
    }
    if spec.owner is not None:
        labels[resource.LABEL_OWNER] = spec.owner
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                **(annotations or {}),
                resource.ANNOTATION_SUBMITTED: f"{time.time_ns():019d}",
            },
        },
        "spec": spec.as_body(),
    }
