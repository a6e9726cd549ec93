"""One source version across a split export's processes, against the real S3 server (MinIO),
through the commands docs/processor.md shows: `--prepare-ranges` pins the ETag (and the
version id in a versioned bucket), every range and the finishing step read with it. The source
overwritten between ranges fails the export SOURCE_CHANGED and leaves nothing behind; in a
versioned bucket the export reads the pinned version throughout (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from export_processor.convert import Exporter
from export_processor.s3client import new_s3_client
from export_processor.settings import ProcessorSettings
from tests.support.processor_inputs import EXT, MiB, medium_csv, run_cli

ENV = {"EXPORTJOBS_S3_PART_SIZE_BYTES": str(5 * MiB)}


def _common(bucket: str, fmt: str, count: int) -> list[str]:
    return [
        *("--source", f"s3://{bucket}/in/data.csv", "--format", fmt),
        *("--destination", f"s3://{bucket}/out/", "--export-name", "ej-p"),
        *("--range-count", str(count)),
    ]


def _pinned(prepared: dict[str, Any]) -> list[str]:
    """The flags the operator gives every range and the finishing step (as env)."""
    source = prepared["source"]
    flags = ["--range-upload-id", prepared["uploadId"]] if prepared.get("uploadId") else []
    flags += ["--source-etag", source["etag"]]
    return flags + (["--source-version-id", source["versionId"]] if "versionId" in source else [])


def _left(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(o["Key"] for o in listed), [u["Key"] for u in uploads]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_source_overwritten_between_ranges_fails_source_changed_and_leaves_nothing(
    s3_client: Any, s3_bucket: str, fmt: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(60_000))
    common = _common(s3_bucket, fmt, 3)
    code, out, err, _ = run_cli(*common, "--prepare-ranges", env=ENV, tmp_path=tmp_path)
    assert code == 0, err
    prepared = json.loads(out)
    etag = s3_client.head_object(Bucket=s3_bucket, Key="in/data.csv")["ETag"]
    assert prepared["source"] == {"etag": etag}  # unversioned bucket: no version id
    assert (prepared["uploadId"] is None) == (fmt == "parquet")
    pinned = _pinned(prepared)
    code, _, err, first = run_cli(
        *common, *pinned, "--range-index", "0", env=ENV, tmp_path=tmp_path
    )
    assert code == 0, err
    # Overwritten with bytes of the same size: only the version tells them apart.
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(60_000)[::-1])
    code, _, err, second = run_cli(
        *common, *pinned, "--range-index", "1", env=ENV, tmp_path=tmp_path
    )
    assert code == 3, err
    assert second["error"]["code"] == "SOURCE_CHANGED" and not second["error"]["retryable"]
    assert err.startswith("exportjobs-processor: SOURCE_CHANGED:")
    # The operator then fails the export and runs the clean-up: nothing is left.
    code, _, err, _ = run_cli(*common, *pinned, "--clean-ranges", env=ENV, tmp_path=tmp_path)
    assert code == 0, err
    assert _left(s3_client, s3_bucket) == ([], [])
    assert first["range"]["plan"]  # (range 0 did run before the overwrite)


def test_the_source_overwritten_after_the_ranges_fails_the_finishing_step(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(60_000))
    common = _common(s3_bucket, "csv", 2)
    code, out, err, _ = run_cli(*common, "--prepare-ranges", env=ENV, tmp_path=tmp_path)
    assert code == 0, err
    pinned = _pinned(json.loads(out))
    payloads = []
    for index in range(2):
        code, _, err, payload = run_cli(
            *common, *pinned, "--range-index", str(index), env=ENV, tmp_path=tmp_path
        )
        assert code == 0, err
        payloads.append({"index": index, "payload": payload})
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(60_001))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    code, _, err, final = run_cli(
        *common, *pinned, "--finish-ranges", str(results), env=ENV, tmp_path=tmp_path
    )
    assert code == 3, err
    assert final["error"]["code"] == "SOURCE_CHANGED"
    assert _left(s3_client, s3_bucket) == ([], [])  # the finishing step cleaned up itself


def test_a_versioned_source_overwritten_between_ranges_is_read_as_the_pinned_version(
    s3_client: Any, versioned_bucket: str, tmp_path: Path
) -> None:
    bucket = versioned_bucket
    old = s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=medium_csv(60_000))
    common = _common(bucket, "jsonl", 3)
    code, out, err, _ = run_cli(*common, "--prepare-ranges", env=ENV, tmp_path=tmp_path)
    assert code == 0, err
    prepared = json.loads(out)
    assert prepared["source"] == {"etag": old["ETag"], "versionId": old["VersionId"]}
    pinned = _pinned(prepared)
    payloads = []
    for index in range(3):
        code, _, err, payload = run_cli(
            *common, *pinned, "--range-index", str(index), env=ENV, tmp_path=tmp_path
        )
        assert code == 0, err
        payloads.append({"index": index, "payload": payload})
        if index == 0:
            s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=medium_csv(90_000))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    code, _, err, final = run_cli(
        *common, *pinned, "--finish-ranges", str(results), env=ENV, tmp_path=tmp_path
    )
    assert code == 0, err
    assert final["rows"] == 60_000 and final["split"]["redone"] == []
    single = ProcessorSettings.from_env(
        {},
        source_uri=f"s3://{bucket}/in/data.csv",
        source_version_id=old["VersionId"],
        destination_uri=f"s3://{bucket}/one/",
        export_format="jsonl",
        export_name="ej-p",
    )
    Exporter(single, s3_client=new_s3_client(max_attempts=3, pool_size=8)).run()
    got = s3_client.get_object(Bucket=bucket, Key=f"out/ej-p/data{EXT['jsonl']}")["Body"].read()
    want = s3_client.get_object(Bucket=bucket, Key=f"one/ej-p/data{EXT['jsonl']}")["Body"].read()
    assert got == want
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
