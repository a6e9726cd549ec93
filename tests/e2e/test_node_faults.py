"""The cluster misbehaving under a running export, on the real node:

- the kubelet restarted while the processor's pod runs: the pod keeps running, the export
  succeeds with its one pod;
- the node's containerd restarted mid-export: the export ends Succeeded with one result (the Job
  retries if the pod was lost).

The processor reads its source through Toxiproxy capped at 1 MB/s (the release's S3 endpoint for
the module), so an export of 24 MB runs long enough for each fault to land mid-way.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import s3_faults
from tests.support.cluster import REPO
from tests.support.e2e_stack import FINAL, INPUT_BUCKET, OUTPUT_BUCKET, E2ECluster, answering, call
from tests.support.processor_inputs import medium_csv

pytestmark = pytest.mark.timeout(1200)

ROWS = 240_000  # ~24 MB: ~25 s at 1 MB/s


@pytest.fixture(scope="module")
def slow_s3(
    product: Any, e2e_cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The release's S3 endpoint moved behind Toxiproxy (on the node's address), 1 MB/s down."""
    tmp = tmp_path_factory.mktemp("slow-s3")
    upstream = e2e_cluster.s3_in_cluster.removeprefix("http://").rstrip("/")
    host = upstream.rsplit(":", 1)[0]
    with s3_faults.toxiproxy(tmp) as toxi:
        listen = toxi.proxy("s3", upstream, host=host)
        toxi.toxic("s3", "bandwidth", "downstream", rate=1024)
        product.upgrade({"s3": {"endpointUrl": f"http://{listen}"}})
        answering(product)
        try:
            yield
        finally:
            product.upgrade({})
            answering(product)


@pytest.fixture(scope="module")
def source(e2e_s3: Any) -> str:
    key = f"node-faults/{uuid.uuid4().hex[:6]}/data.csv"
    e2e_s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=medium_csv(ROWS))
    return f"s3://{INPUT_BUCKET}/{key}"


def _export_pods(cluster: E2ECluster, namespace: str, export_id: str) -> list[Any]:
    items: list[Any] = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", f"exportjobs.dev/export={export_id}"
    )["items"]
    return items


def _start(product: Any, cluster: E2ECluster, source: str) -> str:
    """Post an export and wait until its processor's container runs; its id."""
    status, body = call(product, "POST", "/v1/exports", {"source": source, "format": "jsonl"})
    assert status == 202, body
    export_id: str = body["id"]
    deadline = time.monotonic() + 180
    while True:
        pods = _export_pods(cluster, product.namespace, export_id)
        running = [
            p
            for p in pods
            if any(
                "running" in (c.get("state") or {})
                for c in p["status"].get("containerStatuses", [])
            )
        ]
        if running:
            return export_id
        assert time.monotonic() < deadline, f"the processor of {export_id} never ran: {pods}"
        time.sleep(0.5)


def _final(product: Any, export_id: str, within: float = 600) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            status, view = call(product, "GET", f"/v1/exports/{export_id}")
        except OSError:  # the port-forward's pod went away; it is started again
            status, view = 0, None
        if status == 200 and view["status"] in FINAL:
            return view
        assert time.monotonic() < deadline, f"{export_id} not final: {view}"
        time.sleep(1)


def _one_result(e2e_s3: Any, view: Any) -> None:
    assert view["status"] == "Succeeded", view
    assert view["result"]["rows"] == ROWS
    uri = view["result"]["uri"]
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    assert bucket == OUTPUT_BUCKET
    prefix = key.rsplit("/", 1)[0] + "/"
    listed = e2e_s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    assert [o["Key"] for o in listed] == [key]
    assert e2e_s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) == []


def _node_env(cluster: E2ECluster) -> dict[str, str]:
    assert cluster.local is not None and cluster.local.local_dir is not None
    local_dir = cluster.local.local_dir
    return {
        **cluster.env,
        "EXPORTJOBS_LOCAL_DIR": str(local_dir),
        "EXPORTJOBS_KWOK_PKI": str(local_dir / "kwok" / "clusters" / cluster.local.name / "pki"),
    }


def _restart(cluster: E2ECluster, component: str) -> None:
    done = subprocess.run(
        [str(REPO / "hack" / "node.sh"), "restart", component],
        env=_node_env(cluster),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr


def test_kubelet_restarted_while_the_processor_runs(
    product: Any, e2e_cluster: E2ECluster, e2e_s3: Any, slow_s3: None, source: str
) -> None:
    if e2e_cluster.local is None:
        pytest.skip("restarts the local real node's kubelet")
    export_id = _start(product, e2e_cluster, source)
    (before,) = _export_pods(e2e_cluster, product.namespace, export_id)
    _restart(e2e_cluster, "kubelet")
    view = _final(product, export_id)
    _one_result(e2e_s3, view)
    (after,) = _export_pods(e2e_cluster, product.namespace, export_id)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    assert view.get("attempts", 1) == 1


def test_containerd_restarted_mid_export(
    product: Any, e2e_cluster: E2ECluster, e2e_s3: Any, slow_s3: None, source: str
) -> None:
    if e2e_cluster.local is None:
        pytest.skip("restarts the local real node's containerd")
    export_id = _start(product, e2e_cluster, source)
    _restart(e2e_cluster, "containerd")
    view = _final(product, export_id)
    _one_result(e2e_s3, view)
    pods = _export_pods(e2e_cluster, product.namespace, export_id)
    assert [p["status"]["phase"] for p in pods].count("Succeeded") == 1
