"""The processor against the real S3 server (MinIO): every format read back and compared, exit
codes for missing sources and broken S3 access, and no visible output after any failure."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from export_processor.convert import Exporter
from export_processor.errors import CancelledError, TransientError
from export_processor.s3client import new_s3_client
from export_processor.settings import ProcessorSettings
from tests.support.corpus import CASES, assert_output_matches
from tests.support.processor_inputs import EXT, FORMATS, MiB, medium_csv, run_cli


def assert_nothing_visible(s3: Any, bucket: str, prefix: str = "") -> None:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert [o["Key"] for o in listed if not o["Key"].endswith(".csv")] == []
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.fixture(scope="module")
def medium() -> bytes:
    return medium_csv()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_through_s3(
    s3_client: Any, s3_bucket: str, medium: bytes, fmt: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium)
    code, out, err, payload = run_cli(
        "--source",
        f"s3://{s3_bucket}/in/data.csv",
        "--format",
        fmt,
        "--destination",
        f"s3://{s3_bucket}/out/",
        "--export-name",
        "ej-1",
        env={"EXPORTJOBS_EXPORT_NAME": ""},
        tmp_path=tmp_path,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result == payload
    key = f"out/ej-1/data{EXT[fmt]}"
    assert result["uri"] == f"s3://{s3_bucket}/{key}"
    body = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["bytes"] == len(body)
    assert result["rows"] == 120_000
    assert result["bytesRead"] == len(medium)
    expected = list(csv.reader(io.StringIO(medium.decode(), newline="")))
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(body))
        assert table.num_rows == 120_000
        assert table.column("text").to_pylist() == [r[4] for r in expected[1:]]
        assert table.column("key").to_pylist()[:3] == ["k0000000", "k0007919", "k0015838"]
        path = tmp_path / "out.parquet"
        path.write_bytes(body)
        count, total = duckdb.sql(f"SELECT count(*), sum(id) FROM '{path}'").fetchall()[0]
        assert (count, total) == (120_000, sum(range(120_000)))
    elif fmt == "jsonl":
        lines = body.decode().split("\n")
        assert lines[-1] == ""
        first = json.loads(lines[0])
        assert first == {
            "id": 0,
            "key": "k0000000",
            "amount": 0.0,
            "category": "cat0",
            "text": 'row 0, said "hi" ',
        }
        assert [json.loads(line)["text"] for line in lines[:-1]] == [r[4] for r in expected[1:]]
    else:
        import gzip

        text = (gzip.decompress(body) if fmt == "csv.gz" else body).decode()
        assert list(csv.reader(io.StringIO(text, newline=""))) == expected
    if fmt == "csv":
        assert len(body) > 5 * MiB  # more than one part: a real multipart upload
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_awkward_csv_through_s3(s3_client: Any, s3_bucket: str, fmt: str, tmp_path: Path) -> None:
    for case in (c for c in CASES if c.name in ("quoting_bom_crlf", "unicode", "wide_rows")):
        s3_client.put_object(Bucket=s3_bucket, Key=f"{case.name}.csv", Body=case.data)
        code, _, err, _ = run_cli(
            "--source",
            f"s3://{s3_bucket}/{case.name}.csv",
            "--format",
            fmt,
            "--destination",
            f"s3://{s3_bucket}/",
            *case.args,
            env={
                "EXPORTJOBS_BLOCK_SIZE_BYTES": "65536",
                "EXPORTJOBS_S3_READ_CHUNK_BYTES": "100000",
            },
            tmp_path=tmp_path,
        )
        assert code == 0, err
        body = s3_client.get_object(Bucket=s3_bucket, Key=f"{case.name}{EXT[fmt]}")["Body"].read()
        assert_output_matches(case, fmt, body)


def test_a_retry_overwrites_instead_of_adding(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n")
    for _ in range(2):
        code, _, err, _ = run_cli(
            "--source",
            f"s3://{s3_bucket}/a.csv",
            "--format",
            "jsonl",
            "--destination",
            f"s3://{s3_bucket}/exports/",
            tmp_path=tmp_path,
        )
        assert code == 0, err
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(keys) == ["a.csv", "exports/a.jsonl"]


def test_missing_object_or_bucket_exits_3(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    for source in (f"s3://{s3_bucket}/nope.csv", "s3://no-such-bucket-exportjobs/x.csv"):
        code, _, err, payload = run_cli(
            "--source",
            source,
            "--format",
            "csv",
            "--destination",
            f"s3://{s3_bucket}/",
            tmp_path=tmp_path,
        )
        assert code == 3, err
        assert payload["error"]["code"] == "SOURCE_NOT_FOUND"
        assert payload["error"]["retryable"] is False
        assert err.startswith("exportjobs-processor: SOURCE_NOT_FOUND:")


def test_another_etag_exits_3(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n")
    code, _, _, payload = run_cli(
        "--source",
        f"s3://{s3_bucket}/a.csv",
        "--source-etag",
        '"0123456789abcdef"',
        "--format",
        "csv",
        "--destination",
        f"s3://{s3_bucket}/",
        tmp_path=tmp_path,
    )
    assert code == 3
    assert payload["error"]["code"] == "SOURCE_CHANGED"


@pytest.mark.parametrize(
    ("env", "exit_code", "error_code"),
    [
        # A 4xx that is not throttling gets the same answer on every attempt: not retried.
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret-key-000"}, 2, "S3_REFUSED"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, 1, "INTERNAL"),
    ],
    ids=["wrong-credentials", "unreachable-endpoint"],
)
def test_s3_trouble_is_retried_only_when_transient(
    s3_client: Any,
    s3_bucket: str,
    env: dict[str, str],
    exit_code: int,
    error_code: str,
    tmp_path: Path,
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n")
    code, _, err, payload = run_cli(
        "--source",
        f"s3://{s3_bucket}/a.csv",
        "--format",
        "csv",
        "--destination",
        f"s3://{s3_bucket}/",
        env={**env, "EXPORTJOBS_S3_MAX_ATTEMPTS": "1"},
        tmp_path=tmp_path,
    )
    assert code == exit_code, err
    assert payload["error"]["retryable"] is (exit_code == 1)
    assert payload["error"]["code"] == error_code
    assert err.count("\n") == 1


def test_a_missing_destination_bucket_fails_once_with_its_own_code(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a.csv", Body=b"x\n1\n")
    code, _, err, payload = run_cli(
        "--source",
        f"s3://{s3_bucket}/a.csv",
        "--format",
        "csv",
        "--destination",
        "s3://no-such-bucket-exportjobs-out/exports/",
        tmp_path=tmp_path,
    )
    assert code == 2, err
    assert payload["error"]["code"] == "DESTINATION_NOT_FOUND"
    assert payload["error"]["retryable"] is False


class FaultyS3:
    """The real client, except that uploading part number `fail_at` raises, every time."""

    def __init__(self, real: Any, *, fail_at: int | None) -> None:
        self._real = real
        self._fail_at = fail_at
        self.parts = 0
        self.uploads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        created = self._real.create_multipart_upload(**kwargs)
        self.uploads.append(created["UploadId"])
        return created

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts += 1
        if kwargs["PartNumber"] == self._fail_at:
            raise ConnectionResetError("injected: connection reset during part upload")
        return self._real.upload_part(**kwargs)


def _exporter(bucket: str, fmt: str, client: Any) -> Exporter:
    settings = ProcessorSettings.from_env(
        {},
        source_uri=f"s3://{bucket}/big.csv",
        destination_uri=f"s3://{bucket}/out/",
        export_format=fmt,
        s3_part_size_bytes=5 * MiB,
    )
    return Exporter(settings, s3_client=client)


def test_upload_failing_mid_way_aborts_and_leaves_nothing(
    s3_client: Any, s3_bucket: str, medium: bytes
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="big.csv", Body=medium)
    faulty = FaultyS3(new_s3_client(max_attempts=1, pool_size=8), fail_at=2)
    with pytest.raises(TransientError, match="injected"):
        _exporter(s3_bucket, "csv", faulty).run()
    assert len(faulty.uploads) == 1  # a multipart upload had started...
    assert_nothing_visible(s3_client, s3_bucket, "out/")  # ...and was aborted


class SignalledDuringCreate(FaultyS3):
    """The real client, except that a signal lands while CreateMultipartUpload is answered: S3
    made the upload, the processor never learns its id."""

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        super().create_multipart_upload(**kwargs)
        raise CancelledError("stopped by signal SIGTERM")


def test_a_signal_during_create_multipart_upload_leaves_no_upload(
    s3_client: Any, s3_bucket: str, medium: bytes
) -> None:
    """The race CI met in test_sigterm_mid_upload_aborts: SIGTERM as the upload became visible,
    before the processor had its id; the abort then knew of no upload and left it open."""
    s3_client.put_object(Bucket=s3_bucket, Key="big.csv", Body=medium)
    signalled = SignalledDuringCreate(new_s3_client(max_attempts=1, pool_size=8), fail_at=None)
    with pytest.raises(CancelledError):
        _exporter(s3_bucket, "csv", signalled).run()
    assert len(signalled.uploads) == 1  # S3 made the upload...
    assert_nothing_visible(s3_client, s3_bucket, "out/")  # ...and the abort found it


def test_bad_row_after_parts_were_uploaded_aborts(s3_client: Any, s3_bucket: str) -> None:
    data = medium_csv(250_000, tail="1,2\r\n")  # ~25 MB, then a ragged row
    s3_client.put_object(Bucket=s3_bucket, Key="big.csv", Body=data)
    spy = FaultyS3(new_s3_client(max_attempts=1, pool_size=8), fail_at=None)
    from export_processor.errors import BadInputError

    with pytest.raises(BadInputError, match="Expected 5 columns, got 2"):
        _exporter(s3_bucket, "csv", spy).run()
    assert spy.parts >= 2
    assert_nothing_visible(s3_client, s3_bucket, "out/")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_quote_open_at_the_end_names_its_line_across_ranges(
    s3_client: Any, s3_bucket: str, fmt: str, tmp_path: Path
) -> None:
    """The line feeds are not counted while converting: the error reads the object again (over
    several ranged GETs here) to name the line, and still uploads nothing."""
    rows = 120_000
    data = medium_csv(rows, tail='7,k,1.0,cat1,"open\r\nmore\r\n')
    s3_client.put_object(Bucket=s3_bucket, Key="open.csv", Body=data)
    code, _, err, payload = run_cli(
        "--source",
        f"s3://{s3_bucket}/open.csv",
        "--format",
        fmt,
        "--destination",
        f"s3://{s3_bucket}/out/",
        env={
            "EXPORTJOBS_S3_READ_CHUNK_BYTES": str(1 * MiB),
            "EXPORTJOBS_BLOCK_SIZE_BYTES": str(MiB),
        },
        tmp_path=tmp_path,
    )
    assert code == 2, err
    assert payload["error"]["code"] == "BAD_CSV"
    # The header is line 1, the rows 2..rows+1: the quote opens on the next line.
    assert f"quote opened on line {rows + 2} is never closed" in payload["error"]["message"]
    assert_nothing_visible(s3_client, s3_bucket, "out/")


def test_sigterm_mid_upload_aborts(s3_client: Any, s3_bucket: str, tmp_path: Path) -> None:
    fifo = tmp_path / "input.csv"
    os.mkfifo(fifo)
    message = tmp_path / "termination-log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "export_processor.cli",
            "--source",
            fifo.as_uri(),
            "--format",
            "csv",
            "--destination",
            f"s3://{s3_bucket}/out/",
            "--termination-message-path",
            str(message),
        ],
        env={**os.environ, "EXPORTJOBS_S3_PART_SIZE_BYTES": str(5 * MiB)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer_done = threading.Event()

    def feed() -> None:
        try:
            with fifo.open("wb") as pipe:
                # Several parser blocks, then the writer keeps the pipe open: more to come.
                pipe.write(medium_csv(400_000))
                writer_done.wait(60)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 60
        while not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        writer_done.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    error = json.loads(message.read_text())["error"]
    assert error["code"] == "CANCELLED"
    assert error["retryable"] is True
    assert_nothing_visible(s3_client, s3_bucket)
