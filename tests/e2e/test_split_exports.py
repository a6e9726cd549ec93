"""Split exports on the real node, the product installed by Helm, real S3 (docs/api.md, "Split
exports"): an export asked for with `parallelism` runs as an Indexed Job whose pods each convert
one byte range, and ends as the same output a single pod writes; a range pod killed mid-range is
retried on its own index; a cancelled one leaves no part and no open multipart upload."""

from __future__ import annotations

import gzip
import hashlib
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_stack import (
    FINAL,
    INPUT_BUCKET,
    OUTPUT_BUCKET,
    E2ECluster,
    call,
    poll,
    repeated_csv,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(1200)

INDEX = "batch.kubernetes.io/job-completion-index"


def _upload(e2e_s3: Any, tmp_path: Path, megabytes: int) -> str:
    source = tmp_path / "big.csv"
    # Quoted commas, quotes and newlines: row boundaries a byte offset can miss.
    repeated_csv(
        source,
        megabytes,
        lambda i: (
            f'{i},2026-01-0{i % 9 + 1}T10:00:00,{i * 3.5},"said ""hi"", {i}\nline two",cat{i % 7}\n'
        ),
    )
    key = f"incoming/{uuid.uuid4().hex[:6]}/big.csv"
    e2e_s3.upload_file(str(source), INPUT_BUCKET, key)
    return key


def _submit(product: Any, key: str, fmt: str, parallelism: int) -> str:
    body = {"source": f"s3://{INPUT_BUCKET}/{key}", "format": fmt, "parallelism": parallelism}
    status, view = call(product, "POST", "/v1/exports", body)
    assert status == 202, view
    return str(view["id"])


def _download(view: Any) -> bytes:
    with urllib.request.urlopen(view["result"]["download_url"], timeout=60) as response:
        data: bytes = response.read()
    return data


def _split_sha256(data: bytes, part_bytes: list[int]) -> str:
    """docs/api.md, "Split exports": the client's check of a split result's sha256."""
    digests, offset = b"", 0
    for size in part_bytes:
        digests += hashlib.sha256(data[offset : offset + size]).digest()
        offset += size
    return hashlib.sha256(digests).hexdigest()


def _range_pods(cluster: E2ECluster, namespace: str, export_id: str) -> list[Any]:
    pods = cluster.kubectl_json(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        f"exportjobs.dev/export={export_id},exportjobs.dev/step=ranges",
    )
    return list(pods["items"])


def _leftovers(e2e_s3: Any, export_id: str) -> tuple[list[str], list[str]]:
    prefix = f"exports/{export_id}/"
    objects = e2e_s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=prefix).get("Contents", [])
    uploads = e2e_s3.list_multipart_uploads(Bucket=OUTPUT_BUCKET, Prefix=prefix).get("Uploads", [])
    return [o["Key"] for o in objects], [u["Key"] for u in uploads]


def test_a_split_export_writes_what_one_pod_writes(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    key = _upload(e2e_s3, tmp_path, 24)
    split_id = _submit(product, key, "jsonl", 3)
    whole_id = _submit(product, key, "jsonl", 1)
    split = poll(product, f"/v1/exports/{split_id}", until=FINAL, within=400)
    whole = poll(product, f"/v1/exports/{whole_id}", until=FINAL, within=400)
    assert split["status"] == "Succeeded", split
    assert whole["status"] == "Succeeded", whole

    job = e2e_cluster.kubectl_json("-n", product.namespace, "get", "job", f"export-{split_id}")
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)
    indexes = {
        p["metadata"]["annotations"][INDEX]
        for p in _range_pods(e2e_cluster, product.namespace, split_id)
    }
    assert indexes == {"0", "1", "2"}
    whole_job = e2e_cluster.kubectl_json(
        "-n", product.namespace, "get", "job", f"export-{whole_id}"
    )
    assert (
        "completionMode" not in whole_job["spec"]
        or whole_job["spec"]["completionMode"] == "NonIndexed"
    )

    got, want = _download(split), _download(whole)
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()  # byte for byte
    result = split["result"]
    assert result["rows"] == whole["result"]["rows"] and result["bytes"] == len(got)
    assert result["split"]["ranges"] == 3 and "fallback" not in result["split"]
    assert _split_sha256(got, result["split"]["partBytes"]) == result["sha256"]
    assert whole["result"]["sha256"] == hashlib.sha256(want).hexdigest()
    assert split["progress"]["percent"] == 100
    assert _leftovers(e2e_s3, split_id) == ([f"exports/{split_id}/big.jsonl"], [])


def test_a_cancelled_split_export_leaves_no_part_and_no_upload(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    """With 0.1 CPU per pod the ranges last long enough to cancel mid-range."""
    key = _upload(e2e_s3, tmp_path, 48)
    product.upgrade(
        {"processor": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}}}
    )
    try:
        _cancel_mid_range(product, e2e_s3, e2e_cluster, key)
    finally:
        product.upgrade({})


def _running_with_bytes(product: Any, export_id: str) -> Any:
    poll(product, f"/v1/exports/{export_id}", until={"Running"} | FINAL)

    def probe() -> Any:
        _, view = call(product, "GET", f"/v1/exports/{export_id}")
        return view if (view.get("progress") or {}).get("bytesRead", 0) > 0 else None

    view = wait_for(f"{export_id} converting", probe, timeout=180, interval=0.5)
    assert view["status"] == "Running", view
    return view


def _cancel_mid_range(product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, key: str) -> None:
    export_id = _submit(product, key, "csv", 2)
    _running_with_bytes(product, export_id)
    status, body = call(product, "DELETE", f"/v1/exports/{export_id}")
    assert status == 202, body
    view = poll(product, f"/v1/exports/{export_id}", until=FINAL, within=300)
    assert view["status"] == "Cancelled", view
    ns = product.namespace
    wait_for(
        "the clean-up Job complete",
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in (
                e2e_cluster.kubectl_json("-n", ns, "get", "job", f"export-{export_id}-clean")
                .get("status", {})
                .get("conditions", [])
            )
        ),
        timeout=180,
        interval=1,
    )
    assert not _range_pods(e2e_cluster, ns, export_id)
    assert _leftovers(e2e_s3, export_id) == ([], [])


def test_a_range_pod_killed_mid_range_is_retried_and_the_result_is_the_same(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    """Index 1's pod deleted while it runs (its container started 5 s before; at 0.1 CPU its
    80 MB range takes longer than that, and the Job's failed count proves the pod did not
    finish): the index is retried on its own, and the output equals a single pod's."""
    key = _upload(e2e_s3, tmp_path, 160)
    product.upgrade(
        {"processor": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}}}
    )
    try:
        split_id = _submit(product, key, "csv.gz", 2)
        ns = product.namespace

        def converting() -> list[Any]:
            return [
                p
                for p in _range_pods(e2e_cluster, ns, split_id)
                if p["metadata"]["annotations"].get(INDEX) == "1"
                and any(
                    "running" in (c.get("state") or {})
                    for c in p["status"].get("containerStatuses", [])
                )
            ]

        wait_for("range 1's container running", converting, timeout=300, interval=0.5)
        time.sleep(5)
        [victim] = converting()
        e2e_cluster.kubectl("-n", ns, "delete", "pod", victim["metadata"]["name"], "--wait=false")
        split = poll(product, f"/v1/exports/{split_id}", until=FINAL, within=900)
        whole_id = _submit(product, key, "csv.gz", 1)
        whole = poll(product, f"/v1/exports/{whole_id}", until=FINAL, within=900)
    finally:
        product.upgrade({})
    assert split["status"] == "Succeeded", split
    assert whole["status"] == "Succeeded", whole
    job = e2e_cluster.kubectl_json("-n", ns, "get", "job", f"export-{split_id}")
    assert job["status"]["failed"] >= 1 and job["status"]["completedIndexes"] == "0,1"
    got, want = gzip.decompress(_download(split)), gzip.decompress(_download(whole))
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
    assert split["result"]["rows"] == whole["result"]["rows"]
    assert _leftovers(e2e_s3, split_id) == ([f"exports/{split_id}/big.csv.gz"], [])
