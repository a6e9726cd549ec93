"""What an export request is, and the ExportJob object that records it.

`parse_export_request` validates a `POST /v1/exports` body into an `ExportRequest`;
`export_for_event` does the same for one S3 object-created record; `build_export_job` renders
either as the ExportJob to create. Validation happens here, before anything is sent to the API
server, so a bad request creates nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from export_operator import resource
from export_operator.callbacks import CallbackPolicy, CallbackRefusedError
from export_operator.resource import ExportFormat, S3Location, parse_s3_uri
from export_operator.webhook.events import EventSource, ObjectCreated
from export_operator.webhook.problems import ProblemCode, invalid

_REQUEST_FIELDS = {"dataset_id", "source", "format", "destination", "csv", "callback_url"}
_SOURCE_FIELDS = {"uri", "version_id", "etag"}
_CSV_FIELDS = {"delimiter", "header", "quote", "encoding"}


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """A validated request for one export."""

    source: S3Location
    export_format: ExportFormat
    version_id: str | None = None
    etag: str | None = None
    dataset_id: str | None = None
    destination: str | None = None
    csv: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    """Where the operator POSTs the completion event (`spec.notify.url`)."""

    def canonical(self) -> str:
        """A canonical JSON form: equal requests give equal text (for Idempotency-Key checks)."""
        return json.dumps(
            {
                "source": self.source.uri,
                "version_id": self.version_id,
                "etag": self.etag,
                "dataset_id": self.dataset_id,
                "format": self.export_format.value,
                "destination": self.destination,
                "csv": self.csv,
                "callback_url": self.callback_url,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def parse_format(value: Any) -> ExportFormat:
    """An `ExportFormat` from client input, or a 422 `unknown-format` problem."""
    try:
        return ExportFormat(value)
    except ValueError:
        allowed = ", ".join(f.value for f in ExportFormat)
        raise invalid(
            f"format must be one of {allowed}; got {value!r}", code=ProblemCode.UNKNOWN_FORMAT
        ) from None


def parse_export_request(
    body: Any,
    *,
    dataset_uri_template: str,
    default_destination: str | None,
    callback_policy: CallbackPolicy | None = None,
) -> ExportRequest:
    """Validate a `POST /v1/exports` body.

    Raises:
        Problem: 422 naming the first thing wrong.
    """
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    unknown = sorted(set(body) - _REQUEST_FIELDS)
    if unknown:
        raise invalid(f"unknown fields: {', '.join(unknown)}")
    if "format" not in body:
        raise invalid("format is required", code=ProblemCode.UNKNOWN_FORMAT)
    export_format = parse_format(body["format"])
    # Present-but-null counts as present (and then fails its type check): null is not "absent".
    has_dataset, has_source = "dataset_id" in body, "source" in body
    if has_dataset == has_source:
        raise invalid("give exactly one of dataset_id and source")
    version_id = etag = dataset_id = None
    if has_dataset:
        dataset_id = _dataset_id(body["dataset_id"])
        uri = dataset_uri_template.replace("{dataset_id}", dataset_id)
    else:
        uri, version_id, etag = _source(body["source"])
    source = _s3_uri(uri, what="source")
    destination = (
        _destination(body["destination"]) if "destination" in body else default_destination
    )
    return ExportRequest(
        source=source,
        export_format=export_format,
        version_id=version_id,
        etag=etag,
        dataset_id=dataset_id,
        destination=destination,
        csv=_csv(body["csv"]) if "csv" in body else {},
        callback_url=(
            _callback_url(body["callback_url"], callback_policy or CallbackPolicy())
            if "callback_url" in body
            else None
        ),
    )


def export_for_event(
    record: ObjectCreated,
    *,
    export_format: ExportFormat,
    default_destination: str | None,
    callback_url: str | None = None,
) -> ExportRequest:
    """The export an S3 object-created record asks for (`callback_url` from the settings)."""
    return ExportRequest(
        source=record.location,
        export_format=export_format,
        version_id=record.version_id,
        etag=record.etag,
        destination=default_destination,
        callback_url=callback_url,
    )


def build_export_job(
    *,
    name: str,
    namespace: str,
    request: ExportRequest,
    source_kind: EventSource,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ExportJob object to create for `request`."""
    source: dict[str, Any] = {"uri": request.source.uri}
    if request.version_id:
        source["versionId"] = request.version_id
    if request.etag:
        source["etag"] = request.etag
    spec: dict[str, Any] = {"source": source, "format": request.export_format.value}
    if request.dataset_id:
        spec["datasetId"] = request.dataset_id
    if request.destination:
        spec["destination"] = {"uri": request.destination}
    if request.csv:
        spec["csv"] = dict(request.csv)
    if request.callback_url:
        spec["notify"] = {"url": request.callback_url}
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                resource.LABEL_SOURCE_KIND: source_kind.value,
                resource.LABEL_MANAGED_BY: "exportjobs-webhook",
            },
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def _dataset_id(value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise invalid(f"dataset_id must be a UUID; got {value!r}")


def _source(value: Any) -> tuple[str, str | None, str | None]:
    if isinstance(value, str):
        return value, None, None
    if not isinstance(value, dict):
        raise invalid("source must be an s3:// URI or an object with uri")
    unknown = sorted(set(value) - _SOURCE_FIELDS)
    if unknown:
        raise invalid(f"unknown fields in source: {', '.join(unknown)}")
    uri, version_id, etag = value.get("uri"), value.get("version_id"), value.get("etag")
    if not isinstance(uri, str):
        raise invalid("source.uri must be an s3:// URI", code=ProblemCode.INVALID_S3_URI)
    for name, item, longest in (("version_id", version_id, 1024), ("etag", etag, 256)):
        if name in value and (not isinstance(item, str) or not 0 < len(item) <= longest):
            raise invalid(f"source.{name} must be a string of 1 to {longest} characters")
    return uri, version_id, etag


def _s3_uri(uri: Any, *, what: str) -> S3Location:
    if not isinstance(uri, str):
        raise invalid(f"{what} must be an s3:// URI", code=ProblemCode.INVALID_S3_URI)
    try:
        location = parse_s3_uri(uri)
    except ValueError as exc:
        raise invalid(f"{what}: {exc}", code=ProblemCode.INVALID_S3_URI) from None
    if location.key.startswith("/"):
        raise invalid(
            f"{what}: keys starting with '/' are not supported", code=ProblemCode.INVALID_S3_KEY
        )
    return location


def _destination(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(
            "destination must be an s3://bucket/prefix/ URI", code=ProblemCode.INVALID_S3_URI
        )
    try:
        location = parse_s3_uri(value, prefix=True)
    except ValueError as exc:
        raise invalid(f"destination: {exc}", code=ProblemCode.INVALID_S3_URI) from None
    if location.key and not location.key.endswith("/"):
        raise invalid("destination must be a prefix ending in '/'", code=ProblemCode.INVALID_S3_URI)
    return value


def _callback_url(value: Any, policy: CallbackPolicy) -> str:
    try:
        return policy.check_url(value).url
    except CallbackRefusedError as exc:
        raise invalid(str(exc), code=ProblemCode.INVALID_CALLBACK_URL) from None


def _csv(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("csv must be an object")
    unknown = sorted(set(value) - _CSV_FIELDS)
    if unknown:
        raise invalid(f"unknown fields in csv: {', '.join(unknown)}")
    for name in ("delimiter", "quote"):
        if name in value and (not isinstance(value[name], str) or len(value[name]) != 1):
            raise invalid(f"csv.{name} must be one character")
    if "header" in value and not isinstance(value["header"], bool):
        raise invalid("csv.header must be a boolean")
    if "encoding" in value and (
        not isinstance(value["encoding"], str) or not 0 < len(value["encoding"]) <= 64
    ):
        raise invalid("csv.encoding must be a non-empty string")
    return dict(value)


__all__ = [
    "ExportRequest",
    "build_export_job",
    "export_for_event",
    "parse_export_request",
    "parse_format",
]
