"""Least-privilege S3 keys against the real S3 server (MinIO): the users hack/stack.py makes for
the demo and the e2e tier (export_operator.s3policy, `s3-admin`) can do what each component
does, and MinIO answers AccessDenied to anything else.

- processor: every format and a split export from the allowed source prefix into the allowed
  destination prefix; a missing source is still SOURCE_NOT_FOUND; a source outside the allowed
  prefixes, a write outside the destinations (into the source prefix, another bucket) denied;
- webhook: reads (and so presigns) results under the destinations; cannot write anywhere,
  cannot read sources;
- operator: reads results (the callback's link) and HEADs sources; cannot write.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support import cluster as local_cluster
from tests.support.hack_modules import load
from tests.support.processor_inputs import EXT, FORMATS, medium_csv, run_cli


@pytest.fixture(scope="module")
def users(cluster: local_cluster.LocalCluster, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """A bucket with `in/` (sources), `out/` (destination) and `private/`, a second bucket,
    and the three components' users allowed `in/` and `out/`."""
    root = boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint_url,
        aws_access_key_id=cluster.s3.access_key,
        aws_secret_access_key=cluster.s3.secret_key,
        region_name=cluster.s3.region,
    )
    bucket, other = f"lp-{uuid.uuid4().hex[:10]}", f"lp-{uuid.uuid4().hex[:10]}"
    for name in (bucket, other):
        root.create_bucket(Bucket=name)
    root.put_object(Bucket=bucket, Key="in/data.csv", Body=medium_csv(40_000))
    root.put_object(Bucket=bucket, Key="private/secret.csv", Body=b"a,b\n1,2\n")
    root.put_object(Bucket=bucket, Key="out/earlier/result.csv", Body=b"a,b\n3,4\n")
    stack = load("stack")
    keys = stack.s3_users(
        f"lp-{uuid.uuid4().hex[:6]}",
        tmp_path_factory.mktemp("s3-users"),
        {"allowedSources": [f"s3://{bucket}/in/"], "defaultDestination": f"s3://{bucket}/out/"},
        env={**os.environ, **cluster.env},
    )
    try:
        yield {"root": root, "bucket": bucket, "other": other, "keys": keys}
    finally:
        for name in (bucket, other):
            for page in root.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", []):
                    root.delete_object(Bucket=name, Key=item["Key"])
            for upload in root.list_multipart_uploads(Bucket=name).get("Uploads", []):
                root.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            root.delete_bucket(Bucket=name)


def _client(cluster: local_cluster.LocalCluster, keys: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint_url,
        aws_access_key_id=keys["accessKeyId"],
        aws_secret_access_key=keys["secretAccessKey"],
        region_name=cluster.s3.region,
    )


def _env(keys: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": keys["accessKeyId"],
        "AWS_SECRET_ACCESS_KEY": keys["secretAccessKey"],
        "EXPORTJOBS_EXPORT_NAME": "",
    }


def _denied(call: Any) -> None:
    """MinIO answers AccessDenied (a HEAD has no body to say it in: 403 alone)."""
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] in {"AccessDenied", "403"}, caught.value.response


def test_the_users_are_not_the_root_user(users: dict[str, Any], cluster: Any) -> None:
    assert set(users["keys"]) == {"processor", "webhook", "operator"}
    assert cluster.s3.access_key not in {k["accessKeyId"] for k in users["keys"].values()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_processor_exports_with_its_own_keys(
    users: dict[str, Any], fmt: str, tmp_path: Path
) -> None:
    bucket = users["bucket"]
    code, _, err, payload = run_cli(
        *("--source", f"s3://{bucket}/in/data.csv", "--format", fmt),
        *("--destination", f"s3://{bucket}/out/", "--export-name", f"lp-{fmt}"),
        env=_env(users["keys"]["processor"]),
        tmp_path=tmp_path,
    )
    assert code == 0, err
    assert payload["uri"] == f"s3://{bucket}/out/lp-{fmt}/data{EXT[fmt]}"
    assert payload["rows"] == 40_000


def test_a_split_export_runs_with_the_processors_keys(
    users: dict[str, Any], tmp_path: Path
) -> None:
    """Ranges (part objects), the finishing step (UploadPartCopy, delete of the parts) and a
    clean-up (list and abort uploads) all within the destination prefix."""
    bucket, env = users["bucket"], _env(users["keys"]["processor"])
    common = [
        *("--source", f"s3://{bucket}/in/data.csv", "--format", "jsonl"),
        *("--destination", f"s3://{bucket}/out/", "--export-name", "lp-split"),
        *("--range-count", "2"),
    ]
    payloads = []
    for index in range(2):
        code, _, err, payload = run_cli(
            *common, "--range-index", str(index), env=env, tmp_path=tmp_path
        )
        assert code == 0, err
        payloads.append({"index": index, "payload": payload})
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    code, _, err, payload = run_cli(
        *common, "--finish-ranges", str(results), env=env, tmp_path=tmp_path
    )
    assert code == 0, err
    assert payload["rows"] == 40_000
    code, _, err, _ = run_cli(*common, "--clean-ranges", env=env, tmp_path=tmp_path)
    assert code == 0, err
    listed = users["root"].list_objects_v2(Bucket=bucket, Prefix="out/lp-split/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["out/lp-split/data.jsonl"]


def test_a_missing_source_is_still_source_not_found(users: dict[str, Any], tmp_path: Path) -> None:
    bucket = users["bucket"]
    code, _, err, payload = run_cli(
        *("--source", f"s3://{bucket}/in/absent.csv", "--format", "csv"),
        *("--destination", f"s3://{bucket}/out/", "--export-name", "lp-absent"),
        env=_env(users["keys"]["processor"]),
        tmp_path=tmp_path,
    )
    assert (code, payload["error"]["code"]) == (3, "SOURCE_NOT_FOUND"), err


def test_the_processor_cannot_read_or_write_outside_its_prefixes(
    users: dict[str, Any], cluster: Any, tmp_path: Path
) -> None:
    bucket, other = users["bucket"], users["other"]
    s3 = _client(cluster, users["keys"]["processor"])
    _denied(lambda: s3.get_object(Bucket=bucket, Key="private/secret.csv"))
    _denied(lambda: s3.head_object(Bucket=bucket, Key="private/secret.csv"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key="in/forged.csv", Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key="private/forged.csv", Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=other, Key="out/forged.csv", Body=b"x"))
    _denied(lambda: s3.delete_object(Bucket=bucket, Key="in/data.csv"))
    _denied(lambda: s3.list_objects_v2(Bucket=bucket))
    _denied(lambda: s3.list_multipart_uploads(Bucket=other))
    # Through the processor itself: a source outside the allowed prefixes is refused by S3.
    code, _, err, payload = run_cli(
        *("--source", f"s3://{bucket}/private/secret.csv", "--format", "csv"),
        *("--destination", f"s3://{bucket}/out/", "--export-name", "lp-private"),
        env=_env(users["keys"]["processor"]),
        tmp_path=tmp_path,
    )
    assert code != 0 and payload["error"]["code"] == "S3_REFUSED", err
    code, _, err, payload = run_cli(
        *("--source", f"s3://{bucket}/in/data.csv", "--format", "csv"),
        *("--destination", f"s3://{other}/out/", "--export-name", "lp-other"),
        env=_env(users["keys"]["processor"]),
        tmp_path=tmp_path,
    )
    assert code != 0 and payload["error"]["code"] == "S3_REFUSED", err
    listed = users["root"].list_objects_v2(Bucket=other).get("Contents", [])
    assert listed == []


def test_the_webhook_reads_results_and_writes_nothing(users: dict[str, Any], cluster: Any) -> None:
    bucket = users["bucket"]
    s3 = _client(cluster, users["keys"]["webhook"])
    assert s3.get_object(Bucket=bucket, Key="out/earlier/result.csv")["Body"].read() == (
        b"a,b\n3,4\n"
    )
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "out/earlier/result.csv"}, ExpiresIn=60
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"a,b\n3,4\n"
    forged = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "private/secret.csv"}, ExpiresIn=60
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 403
    _denied(lambda: s3.put_object(Bucket=bucket, Key="out/forged.csv", Body=b"x"))
    _denied(lambda: s3.delete_object(Bucket=bucket, Key="out/earlier/result.csv"))
    _denied(lambda: s3.create_multipart_upload(Bucket=bucket, Key="out/forged.csv"))
    _denied(lambda: s3.get_object(Bucket=bucket, Key="in/data.csv"))


def test_the_operator_reads_sources_and_results_and_writes_nothing(
    users: dict[str, Any], cluster: Any
) -> None:
    bucket = users["bucket"]
    s3 = _client(cluster, users["keys"]["operator"])
    assert s3.head_object(Bucket=bucket, Key="in/data.csv")["ContentLength"] > 0
    assert s3.head_object(Bucket=bucket, Key="out/earlier/result.csv")["ContentLength"] == 8
    _denied(lambda: s3.head_object(Bucket=bucket, Key="private/secret.csv"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key="out/forged.csv", Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key="in/forged.csv", Body=b"x"))
