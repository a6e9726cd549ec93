"""The ExportJob resource model shared by the webhook and the controller.

Everything both sides must agree on lives here: the API coordinates, the enums of the contract
(phases, condition types, formats; the error and exit codes are export_processor.common's), label
keys, and how names are derived. Neither the webhook nor the controller defines these again.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from urllib.parse import unquote

from export_operator.s3names import check_uri
from export_processor.common import ErrorCode as ErrorCode  # the contract's codes
from export_processor.common import ExitCode as ExitCode

GROUP = "exportjobs.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ExportJob"
PLURAL = "exportjobs"

LABEL_EXPORT = f"{GROUP}/export"
"""On the Job and its pods: the name of the ExportJob they serve. The local kwok nodes leave pods
with this label alone, so tests and the pod runner play the kubelet for them."""
LABEL_STEP = f"{GROUP}/step"
"""On the Jobs and pods of a split export's steps (`prepare`, `ranges`, `finish`, `clean`);
absent on a whole export's."""
ANNOTATION_UPLOAD_ID = f"{GROUP}/upload-id"
"""On a split export's ranges pod template: the export's multipart upload (the prepare step's)."""
ANNOTATION_SOURCE_ETAG = f"{GROUP}/source-etag"
"""On a split export's ranges and finishing pod templates: the source's ETag the prepare step
pinned (every pod reads that version: `EXPORTJOBS_SOURCE_ETAG`)."""
ANNOTATION_SOURCE_VERSION_ID = f"{GROUP}/source-version-id"
"""Beside it, the version id the prepare step pinned in a versioned bucket ("" in others)."""
ANNOTATION_RANGES = f"{GROUP}/ranges"
"""On every Job of a split export: its number of ranges."""
ANNOTATION_RANGE_RESULTS = f"{GROUP}/range-results"
"""On a split export's finishing pod template: the ranges' result JSON, read as a file."""
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SOURCE_KIND = f"{GROUP}/source-kind"
"""How the ExportJob was requested: `api`, `s3`, `sns`, `eventbridge` or `minio`."""
NO_OWNER_LABEL = "_none"
"""The `owner` label of metrics for an export without `spec.owner` (principal names are DNS
labels, so no principal is called this)."""
LABEL_OWNER = f"{GROUP}/owner"
"""The principal that created the ExportJob (a copy of `spec.owner`, for label selectors:
`kubectl get ej -l exportjobs.dev/owner=team-a`)."""
ANNOTATION_SUBMITTED = f"{GROUP}/submitted-ns"
"""When the webhook accepted the request: nanoseconds since the epoch, as 19 decimal digits (so
the text sorts as the number). The operator admits one owner's exports in this order, finer than
the one-second `creationTimestamp`; ExportJobs created without it fall back to that."""
ANNOTATION_IDEMPOTENCY = f"{GROUP}/idempotency-key-sha256"
ANNOTATION_REQUEST_SHA256 = f"{GROUP}/request-sha256"
ANNOTATION_SOURCE_SIZE = f"{GROUP}/source-size-bytes"
"""Optional: the source object's size in bytes. The webhook sets it from S3 events (which carry
the size); the operator scales the Job's memory and deadline with it."""

MAX_OBJECT_BYTES = 5 * 1024**4
"""The largest S3 object (5 TiB): the bound of every size an event or annotation carries."""

MAX_NAME_LENGTH = 63
"""ExportJob names also name Jobs and label values, so they stay DNS-1123 labels."""


class Phase(enum.StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)


class ConditionType(enum.StrEnum):
    ACCEPTED = "Accepted"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    RANGES_FAILED = "RangesFailed"
    """A split export's ranges that failed (retried per index, then converted again by the
    finishing step)."""


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    CSV_GZ = "csv.gz"
    JSONL = "jsonl"
    PARQUET = "parquet"


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str, *, prefix: bool = False) -> S3Location:
    """Parse `s3://bucket/key`; with `prefix=True` the key may be empty or must end in `/`.

    The grammar is `export_operator.s3names`, the same the CRD enforces.

    Raises:
        S3UriError: a ValueError with a message fit for a client (and whether the key is at
            fault), when the URI is not an S3 object (or prefix) URI.
    """
    check_uri(uri, prefix=prefix)
    bucket, _, key = uri[len("s3://") :].partition("/")
    return S3Location(bucket, key)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def export_name_for_object(
    *, bucket: str, key: str, version: str | None, export_format: ExportFormat
) -> str:
    """The ExportJob name for an S3 object event: the same object version and format give the
    same name (so redelivered events create nothing new); another version gives another name.

    `version` is the object's versionId, else its ETag/sequencer, whichever the event carries.
    """
    return f"s3-{_digest(bucket, key, version or '', export_format.value)[:24]}"


def export_name_for_idempotency_key(idempotency_key: str, *, principal: str | None = None) -> str:
    """The ExportJob name for an API request with an Idempotency-Key, scoped to `principal`:
    another principal's equal key names another export. `None` (the unnamed credentials'
    `default`) keeps the names given before principals existed."""
    scope = () if principal is None else (principal,)
    return f"api-{_digest('idempotency-key', *scope, idempotency_key)[:24]}"


def request_digest(body: str) -> str:
    """A digest of a canonical request body, stored to tell a replay from a conflicting reuse."""
    return _digest("request", body)


def job_name_for(export_name: str) -> str:
    """The one Job of an ExportJob: deterministic, so creating it twice is a no-op."""
    name = f"export-{export_name}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    return f"export-{export_name[:40]}-{_digest(export_name)[:12]}"


def object_key_from_event(raw_key: str) -> str:
    """S3 event keys are URL-encoded with `+` for spaces (`unquote_plus`).

    Raises:
        ValueError: when the escapes do not decode as UTF-8 (`%FF%FE`): no S3 key is named so,
            and decoding them to U+FFFD would name another object.
    """
    try:
        return unquote(raw_key.replace("+", " "), errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the event key {raw_key!r} does not decode as UTF-8") from None
