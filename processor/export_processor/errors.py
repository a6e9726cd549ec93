"""The processor's failure vocabulary: error codes, exit codes and the exceptions that carry them.

The operator's Job maps exit codes through its podFailurePolicy (`2` bad input and `3` source
missing fail at once, anything else is retried), and reads the error code from the termination
message. The strings match `export_operator.resource.ErrorCode`; they are repeated here because the
processor image does not ship the operator package.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Error codes written into the termination message."""

    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    DESTINATION_NOT_FOUND = "DESTINATION_NOT_FOUND"
    S3_REFUSED = "S3_REFUSED"
    BAD_CSV = "BAD_CSV"
    INVALID_CONFIG = "INVALID_CONFIG"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class ExitCode(enum.IntEnum):
    """Process exit codes; the Job's podFailurePolicy keys on them."""

    OK = 0
    RETRYABLE = 1
    BAD_INPUT = 2
    SOURCE_MISSING = 3


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
