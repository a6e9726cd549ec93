"""Parsing of S3 object-created notifications in every shape the webhook accepts.

Pure functions, no I/O: a plain S3 event (`Records[]`, also what SNS raw delivery and an SNS
Notification's `Message` carry), an EventBridge `Object Created` event, and a MinIO webhook body
(`EventName`, `Key`, `Records[]`). The result is a list of `ObjectCreated` records plus what was
ignored, so the handler can answer `s3:TestEvent` and non-create records without creating anything.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from export_operator import resource
from export_operator.resource import S3Location, object_key_from_event, parse_s3_uri


class EventSource(enum.StrEnum):
    """Where an event came from; also the `exportjobs.dev/source-kind` label and metric label."""

    API = "api"
    S3 = "s3"
    SNS = "sns"
    EVENTBRIDGE = "eventbridge"
    MINIO = "minio"


class EventError(ValueError):
    """The body is not an event we understand, or names an invalid bucket or key."""

    def __init__(self, message: str, *, bad_key: bool = False) -> None:
        super().__init__(message)
        self.bad_key = bad_key


@dataclass(frozen=True, slots=True)
class ObjectCreated:
    """One object-created record, with the key already URL-decoded."""

    location: S3Location
    version_id: str | None
    etag: str | None
    sequencer: str | None
    size: int | None = None
    """The object's size in bytes, when the event says (S3, MinIO and EventBridge do)."""

    @property
    def version(self) -> str | None:
        """What tells versions of one key apart: versionId, else sequencer, else ETag."""
        return self.version_id or self.sequencer or self.etag


@dataclass(slots=True)
class ParsedEvent:
    source: EventSource
    records: list[ObjectCreated] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    """Event names acknowledged without creating anything (test events, deletions, ...)."""


def parse_event(body: Any, *, source: EventSource) -> ParsedEvent:
    """Parse any supported notification body (already JSON-decoded).

    `source` is the channel it arrived on (S3 or SNS); EventBridge and MinIO bodies are recognised
    by their shape and reported as such.

    Raises:
        EventError: when the body is not a supported event or a record is invalid.
    """
    if not isinstance(body, dict):
        raise EventError("the event must be a JSON object")
    if body.get("Event") == "s3:TestEvent":  # sent when a notification configuration is saved
        return ParsedEvent(source=source, ignored=["s3:TestEvent"])
    if "detail-type" in body and "detail" in body:
        return _parse_eventbridge(body)
    if "EventName" in body and "Records" in body:
        return _parse_records(body["Records"], source=EventSource.MINIO)
    if "Records" in body:
        return _parse_records(body["Records"], source=source)
    raise EventError("not an S3 event: expected Records[], an EventBridge or a MinIO event")


def _parse_records(records: Any, *, source: EventSource) -> ParsedEvent:
    if not isinstance(records, list):
        raise EventError("Records must be a list")
    parsed = ParsedEvent(source=source)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise EventError(f"Records[{index}] must be an object")
        name = record.get("eventName")
        if not isinstance(name, str):
            raise EventError(f"Records[{index}].eventName is missing")
        # AWS writes `ObjectCreated:Put`, MinIO `s3:ObjectCreated:Put`.
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            parsed.ignored.append(name)
            continue
        s3 = record.get("s3")
        bucket = _dig(s3, "bucket", "name")
        obj = _dig(s3, "object")
        raw_key = _dig(obj, "key")
        if not isinstance(bucket, str) or not isinstance(raw_key, str) or not isinstance(obj, dict):
            raise EventError(f"Records[{index}] lacks s3.bucket.name or s3.object.key")
        try:
            key = object_key_from_event(raw_key)
        except ValueError as exc:
            raise EventError(f"Records[{index}]: {exc}", bad_key=True) from None
        where = f"Records[{index}].s3.object"
        parsed.records.append(_record(bucket, key, obj, where, ("versionId", "eTag", "sequencer")))
    return parsed


def _parse_eventbridge(body: dict[str, Any]) -> ParsedEvent:
    parsed = ParsedEvent(source=EventSource.EVENTBRIDGE)
    detail_type = body.get("detail-type")
    if body.get("source") != "aws.s3":
        raise EventError(f"EventBridge event from {body.get('source')!r}, expected aws.s3")
    if detail_type != "Object Created":
        parsed.ignored.append(str(detail_type))
        return parsed
    detail = body.get("detail")
    bucket = _dig(detail, "bucket", "name")
    obj = _dig(detail, "object")
    key = _dig(obj, "key")
    if not isinstance(bucket, str) or not isinstance(key, str) or not isinstance(obj, dict):
        raise EventError("EventBridge event lacks detail.bucket.name or detail.object.key")
    # EventBridge carries the key as stored, not URL-encoded like S3 notifications: decoding it
    # would turn `a+b.csv` into `a b.csv`.
    names = ("version-id", "etag", "sequencer")
    parsed.records.append(_record(bucket, key, obj, "detail.object", names))
    return parsed


def _record(
    bucket: str, key: str, obj: dict[str, Any], where: str, names: tuple[str, str, str]
) -> ObjectCreated:
    """The record of `obj` (the event's object), whose version id, ETag and sequencer are
    called `names` in this kind of event."""
    try:
        location = parse_s3_uri(f"s3://{bucket}/{key}")
    except ValueError as exc:
        raise EventError(str(exc), bad_key=True) from None
    version_id, etag, sequencer = (_text(obj.get(name), f"{where}.{name}") for name in names)
    return ObjectCreated(location, version_id, etag, sequencer, _size(obj.get("size"), where))


def _dig(value: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


SIZE_DIGITS = re.compile(r"[0-9]{1,16}")
"""A size sent as a string: ASCII digits only (`str.isdigit()` also accepts "²", which `int()`
then refuses), at most 16 of them (5 TiB has 13)."""
MAX_TEXT_LENGTH = 1024
"""The longest version id, ETag or sequencer kept (the CRD's bound on `versionId`; the ETag's
own bound, 256, is the spec model's)."""


def _size(value: Any, where: str) -> int | None:
    """A size in bytes: absent, or an integer from 0 to 5 TiB (some relays send it as a string
    of ASCII digits).

    Raises:
        EventError: for anything else (a huge integer, Unicode digits, a float, a bool).
    """
    if value is None:
        return None
    if isinstance(value, str) and SIZE_DIGITS.fullmatch(value):
        value = int(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= resource.MAX_OBJECT_BYTES
    ):
        return value
    raise EventError(
        f"{where}.size must be an integer from 0 to {resource.MAX_OBJECT_BYTES} (5 TiB), "
        f"not {_shown(value)}"
    )


def _text(value: Any, where: str) -> str | None:
    """A non-empty string, else None (MinIO sends `""` and AWS `"null"` for no version).

    Raises:
        EventError: for a value that is no string, is longer than `MAX_TEXT_LENGTH`, or holds a
            lone surrogate or a control character (it names the ExportJob through a digest of
            its UTF-8 bytes and travels in environment variables).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{where} must be a string, not {_shown(value)}")
    if len(value) > MAX_TEXT_LENGTH:
        raise EventError(f"{where} is longer than {MAX_TEXT_LENGTH} characters")
    if not is_valid_text(value):
        raise EventError(f"{where} must be valid Unicode text without control characters")
    if value and value != "null":
        return value.strip('"')
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_valid_text(value: str) -> bool:
    """Whether `value` encodes as UTF-8 (no lone surrogates) and holds no control character."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return _CONTROL.search(value) is None


def _shown(value: Any) -> str:
    """A client's value for a message: at most 40 characters of its repr."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."
