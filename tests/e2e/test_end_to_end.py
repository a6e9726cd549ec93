"""End to end: S3 event → 202 → ExportJob → Job → pod → processor → Succeeded → presigned URL.

Everything is the real product except the kubelet, which hack/pod_runner.py plays by running the
processor as a local process. The operator and webhook use tokens of the chart's ServiceAccounts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

INPUT_BUCKET = "exports-input"
OUTPUT_BUCKET = "exports-output"


def _s3_event(key: str, size: int) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": INPUT_BUCKET, "arn": f"arn:aws:s3:::{INPUT_BUCKET}"},
                    "object": {"key": quote_plus(key), "size": size, "sequencer": uuid.uuid4().hex},
                },
            }
        ]
    }


def _call(product: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        product.webhook_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {product.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _post_event(product: Any, key: str, size: int, fmt: str) -> tuple[str, str]:
    status, body = _call(product, "POST", f"/v1/events/s3?format={fmt}", _s3_event(key, size))
    assert status == 202, body
    (export_id,) = body["ids"]
    return export_id, f"/v1/exports/{export_id}"


def _poll(product: Any, location: str, *, until: set[str], within: float = 120) -> Any:
    deadline = time.monotonic() + within
    seen: list[str] = []
    while time.monotonic() < deadline:
        status, view = _call(product, "GET", location)
        assert status == 200, view
        if not seen or seen[-1] != view["status"]:
            seen.append(view["status"])
        if view["status"] in until:
            return view
        time.sleep(0.25)
    raise AssertionError(f"never reached {until}; phases seen: {seen}")


def _write_csv(path: Path, rows: int) -> list[list[str]]:
    records = [
        [str(i), f"customer {i}", f'said "hi, there"\nline {i}', f"{i * 1.25:.2f}", "été"]
        for i in range(rows)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "comment", "amount", "city"])
        writer.writerows(records)
    return records


def test_s3_event_to_downloaded_result(product: Any, s3_client: Any, tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    records = _write_csv(source, 20_000)
    key = f"incoming/{uuid.uuid4().hex[:6]}/orders of 2026+Q3.csv"
    s3_client.upload_file(str(source), INPUT_BUCKET, key)

    _, location = _post_event(product, key, source.stat().st_size, "csv.gz")
    view = _poll(product, location, until={"Succeeded", "Failed", "Cancelled"})

    assert view["status"] == "Succeeded", view
    assert view["source"] == f"s3://{INPUT_BUCKET}/{key}"
    result = view["result"]
    assert result["rows"] == len(records)
    assert result["format"] == "csv.gz"
    with urllib.request.urlopen(result["download_url"], timeout=30) as response:
        payload = response.read()
    assert len(payload) == result["bytes"]
    import hashlib

    assert hashlib.sha256(payload).hexdigest() == result["sha256"]
    rows = list(csv.reader(io.StringIO(gzip.decompress(payload).decode("utf-8"))))
    assert rows[0] == ["id", "name", "comment", "amount", "city"]
    assert rows[1:] == [[r[0], r[1], r[2], r[3], r[4]] for r in records]


def test_bad_csv_ends_failed_with_bad_csv(product: Any, s3_client: Any) -> None:
    key = f"incoming/{uuid.uuid4().hex[:6]}/broken.csv"
    body = b'id,name\n1,ok\n2,\xff\xfe\x00garbage\n3,"unterminated\n'
    s3_client.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)

    _, location = _post_event(product, key, len(body), "parquet")
    view = _poll(product, location, until={"Succeeded", "Failed", "Cancelled"})

    assert view["status"] == "Failed", view
    assert view["error"]["code"] == "BAD_CSV"
    assert view["error"]["retryable"] is False
    assert view["attempts"] == 1, "a bad CSV is not retried"


@pytest.mark.timeout(400)
def test_cancel_mid_run_ends_cancelled_with_no_output(
    product: Any, s3_client: Any, tmp_path: Path
) -> None:
    source = tmp_path / "big.csv"
    block = "".join(
        f'{i},2026-01-0{i % 9 + 1}T10:00:00Z,{i * 3.5},"text, with {i} comma",cat{i % 7}\n'
        for i in range(10_000)
    ).encode()
    with source.open("wb") as f:
        f.write(b"id,ts,amount,note,category\n")
        for _ in range(max(1, (400 << 20) // len(block))):
            f.write(block)
    key = f"incoming/{uuid.uuid4().hex[:6]}/big.csv"
    s3_client.upload_file(str(source), INPUT_BUCKET, key)

    export_id, location = _post_event(product, key, source.stat().st_size, "parquet")
    _poll(product, location, until={"Running"}, within=120)
    status, body = _call(product, "DELETE", location)
    assert status == 202, body
    view = _poll(product, location, until={"Succeeded", "Failed", "Cancelled"})

    assert view["status"] == "Cancelled", view
    listed = s3_client.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=f"exports/{export_id}/")
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
    # The processor got SIGTERM and aborted its multipart upload: nothing half-written remains.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        uploads = s3_client.list_multipart_uploads(
            Bucket=OUTPUT_BUCKET, Prefix=f"exports/{export_id}/"
        ).get("Uploads", [])
        if not uploads:
            break
        time.sleep(0.5)
    assert uploads == []
