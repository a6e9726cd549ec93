"""End to end on a real kubelet: S3 event → 202 → ExportJob → Job → container → S3 → download.

The product is installed by Helm (tests/e2e/conftest.py, tests/support/e2e_stack.py) and
reached only as a user reaches it: the webhook through a port-forward to its Service (or, for
the load test, from a client pod through the Service's ClusterIP), kubectl, and S3. Exit codes,
termination messages, OOM kills, SIGTERM on cancel and logs all come from the kubelet and the
container runtime.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

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

# Setting the tier up may wait for the machine's one real node and builds the images.
pytestmark = pytest.mark.timeout(1200)


def _s3_event(key: str, size: int) -> dict[str, Any]:
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


def _post_event(product: Any, key: str, size: int, fmt: str) -> tuple[str, str]:
    status, body = call(product, "POST", f"/v1/events/s3?format={fmt}", _s3_event(key, size))
    assert status == 202, body
    (export_id,) = body["ids"]
    return export_id, f"/v1/exports/{export_id}"


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


def _processor_pods(cluster: E2ECluster, namespace: str, export_id: str) -> list[Any]:
    job = cluster.kubectl_json("-n", namespace, "get", "exportjob", export_id)["status"]["jobName"]
    pods = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", f"job-name={job}")
    return list(pods["items"])


def _terminated(pod: Any) -> Any:
    (status,) = pod["status"]["containerStatuses"]
    return status["state"].get("terminated") or status.get("lastState", {}).get("terminated")


def test_product_runs_on_the_real_node(product: Any, e2e_cluster: E2ECluster) -> None:
    """helm install brought 2 webhook pods and the operator to Ready, as restricted pods."""
    ns = product.namespace
    for name, replicas in (("exportjobs-webhook", 2), ("exportjobs-operator", 1)):
        deployment = e2e_cluster.kubectl_json("-n", ns, "get", "deployment", name)
        assert deployment["status"].get("readyReplicas") == replicas, deployment["status"]
    if e2e_cluster.local is not None:
        # A kubelet and containerd report this node, not kwok (which manages only its own).
        info = e2e_cluster.kubectl_json("get", "node", "exportjobs-node")["status"]["nodeInfo"]
        assert info["kubeletVersion"].startswith("v1."), info  # kwok says "simulated"
        assert info["containerRuntimeVersion"].startswith("containerd://"), info
    pods = [  # the release's pods (those of an earlier rollout still going are not)
        p
        for p in e2e_cluster.kubectl_json(
            "-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance=exportjobs"
        )["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        if e2e_cluster.local is not None:
            assert pod["spec"]["nodeName"] == "exportjobs-node"
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532


def test_s3_event_to_downloaded_result(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    source = tmp_path / "orders.csv"
    records = _write_csv(source, 20_000)
    key = f"incoming/{uuid.uuid4().hex[:6]}/orders of 2026+Q3.csv"
    e2e_s3.upload_file(str(source), INPUT_BUCKET, key)

    export_id, location = _post_event(product, key, source.stat().st_size, "csv.gz")
    view = poll(product, location, until=FINAL)

    assert view["status"] == "Succeeded", view
    assert view["source"] == f"s3://{INPUT_BUCKET}/{key}"
    result = view["result"]
    assert result["rows"] == len(records)
    assert result["format"] == "csv.gz"
    with urllib.request.urlopen(result["download_url"], timeout=30) as response:
        payload = response.read()
    assert len(payload) == result["bytes"]
    assert hashlib.sha256(payload).hexdigest() == result["sha256"]
    rows = list(csv.reader(io.StringIO(gzip.decompress(payload).decode("utf-8"))))
    assert rows[0] == ["id", "name", "comment", "amount", "city"]
    assert rows[1:] == [[r[0], r[1], r[2], r[3], r[4]] for r in records]

    # The pod ran in a container on the node; the kubelet kept its log and termination message.
    (pod,) = _processor_pods(e2e_cluster, product.namespace, export_id)
    assert pod["status"]["phase"] == "Succeeded"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"])["sha256"] == result["sha256"]
    logs = e2e_cluster.kubectl("-n", product.namespace, "logs", pod["metadata"]["name"])
    logged = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(entry.get("sha256") == result["sha256"] for entry in logged), logs


def test_bad_csv_fails_with_bad_csv_from_the_exit_code(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster
) -> None:
    key = f"incoming/{uuid.uuid4().hex[:6]}/broken.csv"
    body = b'id,name\n1,ok\n2,\xff\xfe\x00garbage\n3,"unterminated\n'
    e2e_s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)

    export_id, location = _post_event(product, key, len(body), "parquet")
    view = poll(product, location, until=FINAL)

    assert view["status"] == "Failed", view
    assert view["error"]["code"] == "BAD_CSV"
    assert view["error"]["retryable"] is False
    assert view["attempts"] == 1, "a bad CSV is not retried"
    (pod,) = _processor_pods(e2e_cluster, product.namespace, export_id)
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 2
    assert json.loads(terminated["message"])["error"]["code"] == "BAD_CSV"


def test_too_small_memory_limit_ends_oom_killed(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    """A processor limit below what the conversion needs: the kernel kills it, the kubelet says
    OOMKilled, the ExportJob says OOM_KILLED. (The limit is the operator's setting, so the test
    sets it through the chart and puts it back.)"""
    source = tmp_path / "orders.csv"
    _write_csv(source, 5_000)
    key = f"incoming/{uuid.uuid4().hex[:6]}/oom.csv"
    e2e_s3.upload_file(str(source), INPUT_BUCKET, key)
    product.upgrade(
        {
            "processor": {
                "resources": {
                    "requests": {"cpu": "250m", "memory": "48Mi"},
                    "limits": {"cpu": "1", "memory": "48Mi"},
                },
                "memoryPerGiB": "0",
            }
        }
    )
    try:
        # kubectl, as a user can: one attempt only (spec.backoffLimit 0), so no retries to wait.
        name = f"oom-{uuid.uuid4().hex[:8]}"
        manifest = {
            "apiVersion": "exportjobs.dev/v1alpha1",
            "kind": "ExportJob",
            "metadata": {"name": name, "namespace": product.namespace},
            "spec": {
                "source": {"uri": f"s3://{INPUT_BUCKET}/{key}"},
                "format": "parquet",
                "backoffLimit": 0,
            },
        }
        manifest_file = tmp_path / "oom.json"
        manifest_file.write_text(json.dumps(manifest))
        e2e_cluster.kubectl("apply", "-f", str(manifest_file))
        view = poll(product, f"/v1/exports/{name}", until=FINAL)
        assert view["status"] == "Failed", view
        assert view["error"]["code"] == "OOM_KILLED", view["error"]
        pods = _processor_pods(e2e_cluster, product.namespace, name)
        assert pods and all(_terminated(p)["reason"] == "OOMKilled" for p in pods), pods
        assert {_terminated(p)["exitCode"] for p in pods} == {137}
    finally:
        product.upgrade({})


def test_cancel_while_running_stops_the_container_and_leaves_nothing(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    """DELETE while the container converts: the kubelet sends it SIGTERM, it aborts its multipart
    upload, and nothing is left in S3. (The processor reads ~55 MB/s with its default 1 CPU: the
    test gives it 0.1 CPU through the chart, so the conversion lasts long enough to cancel.)"""
    source = tmp_path / "big.csv"
    repeated_csv(
        source,
        100,
        lambda i: (
            f'{i},2026-01-0{i % 9 + 1}T10:00:00Z,{i * 3.5},"text, with {i} comma",cat{i % 7}\n'
        ),
    )
    key = f"incoming/{uuid.uuid4().hex[:6]}/big.csv"
    e2e_s3.upload_file(str(source), INPUT_BUCKET, key)
    product.upgrade(
        {"processor": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}}}
    )
    try:
        _cancel_while_running(product, e2e_s3, e2e_cluster, key, source.stat().st_size)
    finally:
        product.upgrade({})


def _cancel_while_running(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster, key: str, size: int
) -> None:
    export_id, location = _post_event(product, key, size, "parquet")
    poll(product, location, until={"Running"}, within=180)
    # Running with bytes read: the container is converting, with a multipart upload open.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, view = call(product, "GET", location)
        if (view.get("progress") or {}).get("bytesRead", 0) > 0:
            break
        time.sleep(0.5)
    assert view["status"] == "Running", view
    (pod,) = _processor_pods(e2e_cluster, product.namespace, export_id)
    pod_name = pod["metadata"]["name"]
    # Follow the container's log: the processor says it was stopped by SIGTERM.
    follow = e2e_cluster.kubectl_follow("-n", product.namespace, "logs", "-f", pod_name)
    status, body = call(product, "DELETE", location)
    assert status == 202, body
    view = poll(product, location, until=FINAL)

    assert view["status"] == "Cancelled", view
    log = follow.wait_output(timeout=60)
    assert "SIGTERM" in log, log
    listed = e2e_s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=f"exports/{export_id}/")
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
    # The processor aborted its multipart upload: nothing half-written remains.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        uploads = e2e_s3.list_multipart_uploads(
            Bucket=OUTPUT_BUCKET, Prefix=f"exports/{export_id}/"
        ).get("Uploads", [])
        if not uploads:
            break
        time.sleep(0.5)
    assert uploads == []
