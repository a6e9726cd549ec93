"""The processor's termination message, read within the bounds the ExportJob status can hold.

The processor writes its result (`uri`, `bytes`, `rows`, `sha256`, `format`, ...) or its error
(`error.code`, `error.message`, `error.retryable`) as JSON into the pod's termination message
(docs/processor.md). A hostile or broken processor can write anything there, so every field is
bounded here as the CRD bounds it in `status`: a `bytes` of `1e999` (a float that `int()` turns
into an OverflowError), a `uri` over 2,048 characters, a `sha256` over 64, an error code over 64
characters or outside the condition-reason pattern. Such a message is a `ProtocolError`: the
operator ends that export Failed with `PROCESSOR_PROTOCOL` instead of retrying a status patch the
API server refuses.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from export_operator.resource import MAX_OBJECT_BYTES, ExportFormat

INT64_MAX = 2**63 - 1
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
"""A condition reason (the CRD's pattern): the error code becomes the Failed condition's."""
MAX_URI = 2048
MAX_CODE = 64
MAX_ERROR_MESSAGE = 4096

Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


class ProtocolError(ValueError):
    """A termination message that is JSON but breaks the processor's contract."""


class _Message(BaseModel):
    # Unknown fields are ignored: a newer processor may report more (split ranges, timings).
    model_config = ConfigDict(extra="ignore", frozen=True)


MAX_RANGES = 32
"""A split export's ranges at most (the request's `parallelism` bound)."""


class SplitSummary(_Message):
    """`split` of a split export's result (docs/api.md, "Split exports")."""

    ranges: StrictInt = Field(ge=1, le=MAX_RANGES)
    redone: list[Annotated[StrictInt, Field(ge=0, lt=MAX_RANGES)]] = Field(
        default_factory=list, max_length=MAX_RANGES
    )
    part_bytes: list[Annotated[StrictInt, Field(ge=0, le=MAX_OBJECT_BYTES)]] | None = Field(
        None, alias="partBytes", max_length=MAX_RANGES
    )
    fallback: str | None = Field(None, max_length=1024)

    def as_status(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ResultMessage(_Message):
    """A success: what was written, and what was read."""

    uri: str = Field(min_length=6, max_length=MAX_URI, pattern=r"^s3://[^\x00-\x1f\x7f]+$")
    bytes: StrictInt = Field(0, ge=0, le=MAX_OBJECT_BYTES)
    rows: Count = 0
    sha256: str = Field("", max_length=64, pattern=r"^[0-9a-f]*$")
    format: ExportFormat
    bytes_read: Count | None = Field(None, alias="bytesRead")
    duration_seconds: float | None = Field(None, alias="durationSeconds", ge=0, le=10**7)
    split: SplitSummary | None = None

    def as_status(self) -> dict[str, Any]:
        """`status.result` of the ExportJob."""
        status = {"uri": self.uri, "bytes": self.bytes, "rows": self.rows, "sha256": self.sha256}
        status["format"] = self.format.value
        return status if self.split is None else {**status, "split": self.split.as_status()}


class ErrorPayload(_Message):
    """`error` of a failure message."""

    code: str = Field(min_length=1, max_length=MAX_CODE, pattern=REASON_PATTERN)
    message: str = Field("", max_length=MAX_ERROR_MESSAGE)
    retryable: StrictBool = False


def parse_object(text: str) -> dict[str, Any] | None:
    """The message as a JSON object, or None (empty, a log tail, not an object)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read_result(text: str) -> ResultMessage | None:
    """The result a message reports; None when it reports none (no JSON object, no `uri`).

    Raises:
        ProtocolError: a result whose fields break their bounds.
    """
    data = parse_object(text)
    if data is None or "uri" not in data:
        return None
    try:
        result = ResultMessage.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise ProtocolError(f"malformed result in the termination message: {_first(exc)}") from None
    if result.duration_seconds is not None and not math.isfinite(result.duration_seconds):
        raise ProtocolError("malformed result in the termination message: durationSeconds")
    return result


def read_error(text: str) -> ErrorPayload | None:
    """The error a message reports; None when it reports none.

    Raises:
        ProtocolError: an `error` whose fields break their bounds.
    """
    data = parse_object(text)
    if data is None or "error" not in data:
        return None
    try:
        return ErrorPayload.model_validate(data["error"])
    except (ValidationError, ValueError) as exc:
        raise ProtocolError(f"malformed error in the termination message: {_first(exc)}") from None


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}"[:200]
    return str(exc)[:200]
