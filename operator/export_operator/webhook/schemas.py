"""The webhook's response bodies as pydantic models: the source of their /openapi.json schemas.

Handlers build these bodies as plain dicts (public_view.py, a hot path); tests validate what they
build against these models, and schemathesis checks the live service against the generated
document.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from export_operator.resource import ExportFormat, Phase
from export_operator.webhook.problems import ProblemCode


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(_Body):
    """One validation error of a request."""

    field: str = Field(description="Dotted path of the field ('' for the whole body).")
    message: str
    type: str = Field(description="The error's kind (a problem code where one applies).")


class Problem(_Body):
    """RFC 9457 problem details; `code` is stable, `type` derives from it."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(json_schema_extra={"format": "uri"})
    title: str
    status: int = Field(ge=400, le=599)
    code: ProblemCode
    detail: str
    instance: str | None = None
    id: str | None = Field(None, description="The export an Idempotency-Key names.")
    phase: Phase | None = Field(None, description="The phase of a finished export (409).")
    errors: list[FieldError] | None = Field(
        None, description="Every validation error of the request (422)."
    )


class Accepted(_Body):
    """The answer to a stored export request."""

    id: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    status: Phase
    status_url: str


class Progress(BaseModel):
    """Progress as the processor reports it."""

    bytesRead: int | None = None  # noqa: N815 - the resource's field names
    bytesTotal: int | None = None  # noqa: N815
    rows: int | None = None
    percent: float | None = None


class ExportFailure(BaseModel):
    """Why an export failed."""

    code: str
    message: str
    retryable: bool | None = None


class SplitResult(BaseModel):
    """How a split export was converted (docs/api.md, "Split exports")."""

    ranges: int = Field(description="The byte ranges converted, one pod each.")
    redone: list[int] = Field(
        description="Ranges the finishing step converted again (a wrongly guessed row "
        "boundary, a failed range)."
    )
    partBytes: list[int] | None = Field(  # noqa: N815 - the resource's field names
        None,
        description="The bytes of each range's part of the result: `sha256` is the sha256 of "
        "the parts' sha256 digests (raw, in order).",
    )
    fallback: str | None = Field(
        None, description="Why the export ran as one pod after all (then `sha256` is the file's)."
    )


class ExportResult(BaseModel):
    """What an export wrote."""

    uri: str
    bytes: int | None = None
    rows: int | None = None
    sha256: str | None = None
    format: str | None = None
    download_url: str | None = Field(description="Presigned GET URL (single-export reads only).")
    split: SplitResult | None = Field(None, description="Only for a split export.")


class Notification(BaseModel):
    """Delivery of the completion callback (`callback_url`), as the operator records it."""

    state: Literal["Pending", "Delivered", "Failed"]
    attempts: int | None = None
    last_status_code: int | None = None
    last_attempt_time: str | None = None
    delivered_time: str | None = None
    last_error: str | None = None


class ExportAsked(BaseModel):
    """What was asked: the export, its request and who made it."""

    id: str
    status_url: str
    format: ExportFormat | None
    source: str | None
    destination: str | None
    callback_url: str | None = Field(description="spec.notify.url, if any.")
    owner: str | None = Field(description="The principal that created the export.")
    cancel_requested: bool
    created_at: str | None


class ExportState(BaseModel):
    """Where the export stands: its phase, times, attempts, place in the queue and progress."""

    status: Phase
    start_time: str | None
    completion_time: str | None
    attempts: int | None
    queue_position: int | None
    progress: Progress | None


class ExportOutcome(BaseModel):
    """What came of the export: its error or result, and the delivery of its callback."""

    error: ExportFailure | None
    result: ExportResult | None
    notification: Notification | None = Field(
        None, description="The callback's delivery state; null without a callback_url."
    )


class Export(RootModel[dict[str, Any]]):
    """One export: the keys of `ExportAsked`, `ExportState` and `ExportOutcome` in one object,
    and no others (/openapi.json: `allOf` the three, `unevaluatedProperties: false`)."""

    PARTS: ClassVar[tuple[type[BaseModel], ...]] = (ExportAsked, ExportState, ExportOutcome)

    @model_validator(mode="after")
    def _valid_in_every_part(self) -> Export:
        for part in self.PARTS:
            part.model_validate(self.root)
        unknown = set(self.root).difference(*(part.model_fields for part in self.PARTS))
        if unknown:
            raise ValueError(f"keys of no part: {', '.join(sorted(unknown))}")
        return self


class ExportList(_Body):
    """One page of exports."""

    items: list[Export]
    continue_: str | None = Field(
        alias="continue",
        description="Pass as `continue` for the next page; null on the last page.",
    )


class EventResult(_Body):
    """What an S3 event created."""

    ids: list[str]
    created: int | None = None
    duplicates: int | None = None
    ignored: list[str]
    status: Literal["accepted", "ignored", "acknowledged"]


class S3Event(BaseModel):
    """An S3 event notification (`Records[]`, as S3, SNS raw delivery and relays post it), an
    `s3:TestEvent`, an EventBridge `Object Created` event (`detail-type`, `detail`), a MinIO
    webhook body (`EventName`, `Key`, `Records`), or, with header `x-amz-sns-message-type`, an SNS
    message whose `Message` is one of these."""

    model_config = ConfigDict(extra="allow")
