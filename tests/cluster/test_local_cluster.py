"""Proof that the local cluster and S3 server are real: the job controller completes a Job that a
kwok node ran, and a 100 MB multipart upload comes back byte-identical."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from tests.support.cluster import LocalCluster


def test_server_reports_the_pinned_version(kube_api: k8s.ApiClient) -> None:
    info = k8s.VersionApi(kube_api).get_code()
    pinned = _pinned("KUBE_VERSION")
    assert info.git_version == pinned
    assert info.major == "1"
    assert info.minor == pinned.split(".")[1]


def test_a_job_runs_to_complete(kube_api: k8s.ApiClient, namespace: str) -> None:
    batch = k8s.BatchV1Api(kube_api)
    job = k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name="hello"),
        spec=k8s.V1JobSpec(
            backoff_limit=0,
            template=k8s.V1PodTemplateSpec(
                spec=k8s.V1PodSpec(
                    restart_policy="Never",
                    containers=[k8s.V1Container(name="hello", image="busybox")],
                )
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)
    seen: list[str] = []
    stream = watch.Watch().stream(
        batch.list_namespaced_job,
        namespace,
        field_selector="metadata.name=hello",
        timeout_seconds=60,
    )
    for event in stream:
        conditions = event["object"].status.conditions or []
        seen.extend(c.type for c in conditions if c.status == "True")
        if "Complete" in seen:
            break
    assert "Complete" in seen, f"the Job never completed; conditions seen: {seen}"
    pods = k8s.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="job-name=hello")
    assert [p.status.phase for p in pods.items] == ["Succeeded"]
    assert pods.items[0].spec.node_name == "kwok-node-0"


def test_multipart_upload_round_trip(s3_client: Any, s3_bucket: str) -> None:
    from boto3.s3.transfer import TransferConfig

    payload = os.urandom(100 * 1024 * 1024)
    config = TransferConfig(
        multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024
    )
    s3_client.upload_fileobj(io.BytesIO(payload), s3_bucket, "big.bin", Config=config)
    head = s3_client.head_object(Bucket=s3_bucket, Key="big.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-13"), "expected a 13-part multipart upload"
    out = io.BytesIO()
    s3_client.download_fileobj(s3_bucket, "big.bin", out, Config=config)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(payload).digest()


def test_cluster_env_points_at_the_cluster(cluster: LocalCluster) -> None:
    assert cluster.kubeconfig.exists()
    assert cluster.env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def _pinned(name: str) -> str:
    import subprocess

    from tests.support.cluster import REPO

    script = f'source "{REPO}/hack/versions.env"; printf %s "${name}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


def test_scheduler_and_controller_manager_run_without_leader_election(
    cluster: LocalCluster,
) -> None:
    # With leader election, a slow API server (a loaded machine) made them miss a renewal and
    # exit for good: pods then stayed Pending (an e2e run hung in `helm install --wait`).
    # kwokctl drops an `override: true` patch of a flag it does not set itself, so check the
    # processes, not the configuration.
    from pathlib import Path

    import pytest

    if cluster.local_dir is None:
        pytest.skip("a given cluster: not started by hack/cluster.sh")
    # This session's cluster: other sessions may run clusters of the same name elsewhere.
    folder = f"/clusters/{cluster.name}/".encode()
    local_dir = str(cluster.local_dir.resolve()).encode()
    found: dict[str, list[bytes]] = {}
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(args[0].decode(errors="replace")).name
        if (
            name in ("kube-scheduler", "kube-controller-manager")
            and folder in args[0]
            and args[0].startswith(local_dir)
        ):
            found[name] = args
    assert set(found) == {"kube-scheduler", "kube-controller-manager"}, found
    for name, args in found.items():
        assert b"--leader-elect=false" in args, (name, args)
