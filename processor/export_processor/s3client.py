"""The S3 client (botocore's, without boto3: its import cost a tenth of a second at every
start, for helpers the processor does not use) and the translation of its errors into the
processor's vocabulary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import botocore.exceptions
import botocore.session
from botocore.config import Config

from export_processor.common import Backoff
from export_processor.errors import (
    CancelledError,
    DestinationMissingError,
    ExportError,
    S3RefusedError,
    SourceChangedError,
    SourceMissingError,
    TransientError,
)
from export_processor.locations import Location
from export_processor.source import SourcePin

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as S3Client
else:
    S3Client = Any

_MISSING_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound"}
_TRANSIENT_4XX_CODES = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ExpiredToken",
    "RequestExpired",
    "RequestTimeTooSkewed",
    "OperationAborted",
    "NoSuchUpload",
}
"""4xx answers a later attempt may not get: throttling, timeouts, credentials that are refreshed
(projected tokens rotate), a conflicting operation, a multipart upload gone (a new attempt starts
another)."""
_TRANSIENT_4XX_STATUSES = {408, 429}

T = TypeVar("T")

ROUNDS = 4
"""Rounds of botocore's own attempts one S3 call gets before the export fails as retryable. Under
sustained throttling (30% of requests answered 503 SlowDown) one round's 5 attempts fail for one
request in 400, and botocore's retry quota, drained by a long export, leaves some calls a single
attempt: a GB export failed where a pause and a new round carry it through."""
ROUND_BACKOFF = Backoff(base=0.5, cap=8.0)
"""The pause before the second round (0.5 s); it doubles each round (with jitter), at most 8 s."""


def new_s3_client(*, max_attempts: int, pool_size: int) -> S3Client:
    """An S3 client from the standard AWS chain (env, IRSA, pod identity; AWS_ENDPOINT_URL too).

    Checksums are computed only where S3 requires them: the processor hashes its output with
    sha256 itself, and CRC32 over every part would cost CPU the conversion needs. Payloads are
    not signed either (`UNSIGNED-PAYLOAD`, what botocore itself sends over TLS once a checksum
    goes along): without a checksum botocore would sha256 every part again to sign it.
    In transit the bytes are protected by TLS; the result's sha256 covers what was written.
    """
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=10,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"payload_signing_enabled": False},
    )
    # botocore's stubs type the client as BaseClient; it is the S3 client the stubs describe.
    return cast(S3Client, botocore.session.get_session().create_client("s3", config=config))


def with_rounds(
    call: Callable[[], T],
    *,
    what: str,
    missing_is_source: bool = False,
    cancelled: threading.Event | None = None,
    rounds: int = ROUNDS,
) -> T:
    """`call()`, again after a pause while it fails retryably (`translate` says TransientError),
    up to `rounds` times; any other failure, or the last, is raised as an ExportError."""
    for done in range(1, rounds + 1):
        try:
            return call()
        except Exception as exc:
            error = translate(exc, what=what, missing_is_source=missing_is_source)
            if not isinstance(error, TransientError) or done == rounds:
                raise error from exc
        pause = ROUND_BACKOFF.delay(done)
        if cancelled is None:
            time.sleep(pause)
        elif cancelled.wait(pause):
            raise CancelledError(f"cancelled while {what}")
    raise AssertionError("unreachable")  # pragma: no cover


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError (0 for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status if isinstance(status, int) else 0
    return 0


def translate(exc: Exception, *, what: str, missing_is_source: bool = False) -> ExportError:
    """Map a botocore exception to an ExportError.

    Args:
        exc: the exception raised by botocore.
        what: what was being done, for the message ("reading s3://b/k").
        missing_is_source: whether 404s mean the source is missing (exit 3); otherwise a missing
            bucket is DESTINATION_NOT_FOUND (exit 2: no retry creates it).

    S3 4xx answers other than throttling and the like (`_TRANSIENT_4XX_CODES`) fail at once
    (S3_REFUSED, exit 2); 5xx, network trouble and throttling are retryable (exit 1).
    """
    if isinstance(exc, ExportError):
        return exc  # ours already: a signal's CancelledError stays one, never a retry
    code = error_code(exc)
    if missing_is_source and code in _MISSING_CODES:
        return SourceMissingError(f"{what}: the object or bucket does not exist ({code})")
    if missing_is_source and code in ("412", "PreconditionFailed"):
        return SourceChangedError(
            f"{what}: the object changed: it is no longer the version this export pinned "
            "(ETag differs)"
        )
    if code == "NoSuchBucket":
        return DestinationMissingError(f"{what}: the destination bucket does not exist ({code})")
    if isinstance(exc, botocore.exceptions.ClientError):
        status = http_status(exc)
        if (
            400 <= status < 500
            and status not in _TRANSIENT_4XX_STATUSES
            and code not in _TRANSIENT_4XX_CODES
        ):
            return S3RefusedError(f"{what}: S3 refused the request ({code or status}): {exc}")
        return TransientError(f"{what}: S3 refused the request ({code or 'error'}): {exc}")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return TransientError(f"{what}: S3 unreachable or failing: {exc}")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


def pinned(location: Location, pin: SourcePin) -> dict[str, str]:
    """The arguments of a request for `location` in `pin`'s version (VersionId, If-Match)."""
    args = {"Bucket": location.bucket, "Key": location.key}
    if pin.version_id:
        args["VersionId"] = pin.version_id
    if pin.etag:
        args["IfMatch"] = pin.etag
    return args


def head_source(
    client: S3Client,
    location: Location,
    *,
    pin: SourcePin,
    cancelled: threading.Event | None = None,
) -> tuple[int, SourcePin]:
    """The object's size and the version to pin: `pin`'s, else the one there now (its ETag,
    and its version id in a versioned bucket).

    Raises:
        SourceMissingError: no such object, version or bucket.
        SourceChangedError: the object is no longer `pin`'s version (412).
    """
    head = with_rounds(
        lambda: client.head_object(**pinned(location, pin)),  # type: ignore[arg-type]
        what=f"reading {location.uri}",
        missing_is_source=True,
        cancelled=cancelled or threading.Event(),
    )
    version = str(head.get("VersionId") or "")
    return int(head["ContentLength"]), SourcePin(
        etag=pin.etag or head.get("ETag"),
        # "null": the object written while the bucket was unversioned (or suspended).
        version_id=pin.version_id or (version if version not in ("", "null") else None),
    )
