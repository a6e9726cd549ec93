"""The processor's failure vocabulary: error codes, exit codes and the exceptions that carry them.

The operator's Job maps exit codes through its podFailurePolicy (`2` bad input and `3` source
missing fail at once, anything else is retried), and reads the error code from the termination
message. The codes are the contract's (export_processor.common), shared with the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from export_processor.common import ErrorCode, ExitCode


class ExportError(Exception):
    """A failure with a stable code, an exit code and whether a new attempt may succeed."""

    code: ErrorCode = ErrorCode.INTERNAL
    exit_code: ExitCode = ExitCode.RETRYABLE
    retryable: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(ExportError):
    """The CSV cannot be converted as configured; retrying gives the same result."""

    code = ErrorCode.BAD_CSV
    exit_code = ExitCode.BAD_INPUT
    retryable = False


class InvalidConfigError(ExportError):
    """The settings (URIs, format, CSV options) are invalid; retrying gives the same result."""

    code = ErrorCode.INVALID_CONFIG
    exit_code = ExitCode.BAD_INPUT
    retryable = False


class SourceMissingError(ExportError):
    """The source object, its version or its bucket does not exist (or no longer matches)."""

    code = ErrorCode.SOURCE_NOT_FOUND
    exit_code = ExitCode.SOURCE_MISSING
    retryable = False


class SourceChangedError(SourceMissingError):
    """The source is no longer the version pinned for this export (S3 answered 412 to a read
    with `If-Match`): a given ETag that differs, an object overwritten mid-read, or between the
    ranges of a split export. Never retried: the version asked for is gone."""

    code = ErrorCode.SOURCE_CHANGED


class DestinationMissingError(ExportError):
    """The destination bucket does not exist: no attempt can write there until someone creates
    it, so the export fails once with its own code instead of being retried."""

    code = ErrorCode.DESTINATION_NOT_FOUND
    exit_code = ExitCode.BAD_INPUT
    retryable = False


class S3RefusedError(ExportError):
    """S3 refused a request with a 4xx that is not throttling (AccessDenied, InvalidBucketName,
    ...): the same request gets the same answer, so it is not retried."""

    code = ErrorCode.S3_REFUSED
    exit_code = ExitCode.BAD_INPUT
    retryable = False


class TransientError(ExportError):
    """S3 or network trouble (including refused credentials): a later attempt may succeed."""


class CancelledError(ExportError):
    """The process was asked to stop (SIGTERM, SIGINT); the output was aborted."""

    code = ErrorCode.CANCELLED


FINAL_ERRORS: tuple[type[ExportError], ...] = (
    SourceMissingError,
    SourceChangedError,
    InvalidConfigError,
    DestinationMissingError,
    S3RefusedError,
)
"""What every attempt would meet again (the source gone or changed, a refusal)."""


def raise_final(error: Mapping[str, Any]) -> None:
    """A split export's range that failed so (its result JSON's `error`) fails the export."""
    for kind in FINAL_ERRORS:
        if str(error.get("code")) == str(kind.code):
            raise kind(str(error.get("message") or kind.code))
