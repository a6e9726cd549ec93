"""The processor's failures as the contract names them: S3 4xx other than throttling fail at once
with their own code, a missing destination bucket is DESTINATION_NOT_FOUND, and the reason of an
invalid configuration reaches the termination message even when the settings never parsed."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.exceptions
import pytest

from export_processor import cli
from export_processor.common import ExitCode
from export_processor.errors import (
    CancelledError,
    DestinationMissingError,
    S3RefusedError,
    SourceChangedError,
    SourceMissingError,
    TransientError,
)
from export_processor.s3client import translate, with_rounds


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "missing_is_source", "expected"),
    [
        ("NoSuchBucket", 404, False, DestinationMissingError),
        ("NoSuchBucket", 404, True, SourceMissingError),
        ("NoSuchKey", 404, True, SourceMissingError),
        ("PreconditionFailed", 412, True, SourceChangedError),
        ("412", 412, True, SourceChangedError),
        ("NoSuchVersion", 404, True, SourceMissingError),
        ("AccessDenied", 403, False, S3RefusedError),
        ("AccessDenied", 403, True, S3RefusedError),
        ("InvalidBucketName", 400, False, S3RefusedError),
        ("KeyTooLongError", 400, False, S3RefusedError),
        ("SlowDown", 503, False, TransientError),
        ("TooManyRequests", 429, False, TransientError),
        ("RequestTimeout", 400, False, TransientError),
        ("ExpiredToken", 400, True, TransientError),
        ("NoSuchUpload", 404, False, TransientError),
        ("InternalError", 500, False, TransientError),
    ],
)
def test_s3_errors_are_retried_only_when_a_retry_can_help(
    code: str, status: int, missing_is_source: bool, expected: type[Exception]
) -> None:
    error = translate(
        client_error(code, status), what="writing s3://b/k", missing_is_source=missing_is_source
    )
    assert type(error) is expected
    assert error.retryable == (expected is TransientError)
    assert (error.exit_code == ExitCode.RETRYABLE) == (expected is TransientError)
    assert code in error.message or issubclass(expected, SourceMissingError)


def test_a_changed_source_has_its_own_code_and_is_not_retried() -> None:
    """412 to a read with If-Match: the version pinned is gone (issue 23: a split export's
    ranges all read the version pinned before them)."""
    error = translate(client_error("PreconditionFailed", 412), what="x", missing_is_source=True)
    assert (error.code, error.exit_code, error.retryable) == (
        "SOURCE_CHANGED",
        ExitCode.SOURCE_MISSING,
        False,
    )
    assert "changed" in error.message


def test_a_missing_destination_bucket_has_its_own_code() -> None:
    error = translate(client_error("NoSuchBucket", 404), what="writing s3://nope/out/x.csv")
    assert error.code == "DESTINATION_NOT_FOUND" and error.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("EXPORTJOBS_CSV_DELIMITER", "\n", "delimiter"),
        ("EXPORTJOBS_CSV_DELIMITER", "\r", "delimiter"),
        ("EXPORTJOBS_CSV_DELIMITER", "✓", "delimiter"),
        ("EXPORTJOBS_CSV_DELIMITER", "😀", "delimiter"),
        ("EXPORTJOBS_CSV_QUOTE", "\n", "quote"),
        ("EXPORTJOBS_CSV_ENCODING", "utf-16", "encoding"),
        ("EXPORTJOBS_CSV_ENCODING", "rot13", "encoding"),
        ("EXPORTJOBS_CSV_ENCODING", "bogus-enc", "encoding"),
        ("EXPORTJOBS_BLOCK_SIZE_BYTES", "lots", "EXPORTJOBS_BLOCK_SIZE_BYTES"),
    ],
)
def test_an_invalid_configuration_from_the_environment_reaches_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    """As in a Job: everything from variables, the message path too (no flags)."""
    message = tmp_path / "termination-log"
    monkeypatch.setenv("EXPORTJOBS_TERMINATION_MESSAGE_PATH", str(message))
    monkeypatch.setenv("EXPORTJOBS_SOURCE_URI", (tmp_path / "in.csv").as_uri())
    monkeypatch.setenv("EXPORTJOBS_DESTINATION_URI", tmp_path.as_uri() + "/")
    monkeypatch.setenv("EXPORTJOBS_FORMAT", "csv")
    monkeypatch.setenv(variable, value)
    assert cli.run([]) == int(ExitCode.BAD_INPUT)
    error = json.loads(message.read_text())["error"]
    assert error["code"] == "INVALID_CONFIG" and error["retryable"] is False
    assert words in error["message"]


def test_a_signal_inside_an_s3_call_is_not_retried() -> None:
    """SIGTERM raises CancelledError in whatever S3 call runs; with_rounds used to translate it
    into a TransientError and call again (a second multipart upload, the first one orphaned)."""
    calls = 0

    def create() -> None:
        nonlocal calls
        calls += 1
        raise CancelledError("stopped by signal SIGTERM")

    with pytest.raises(CancelledError, match="SIGTERM"):
        with_rounds(create, what="uploading s3://b/k", rounds=3)
    assert calls == 1
