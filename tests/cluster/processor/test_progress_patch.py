"""The processor patches status.progress on its ExportJob with a ServiceAccount token over plain
HTTPS, and an API error never fails the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.support.cluster import LocalCluster
from tests.support.kube_access import ca_file_of, create_exportjob, service_account_token

CRD = Path(__file__).resolve().parents[3] / "charts/exportjobs/crds/exportjobs.dev_exportjobs.yaml"


@pytest.fixture(scope="module")
def exportjob_crd(kube_api: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(kube_api)
    body = yaml.safe_load(CRD.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.2)
    raise AssertionError("the ExportJob CRD was not established")


def _run(
    *, cluster: LocalCluster, tmp_path: Path, namespace: str, token: str, s3: Any, bucket: str
) -> subprocess.CompletedProcess[str]:
    server, ca = ca_file_of(cluster, tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    data = b"a,b\n" + b"1,hello\n" * 200_000
    s3.put_object(Bucket=bucket, Key="in.csv", Body=data)
    env = {
        **os.environ,
        "EXPORTJOBS_SOURCE_URI": f"s3://{bucket}/in.csv",
        "EXPORTJOBS_FORMAT": "csv",
        "EXPORTJOBS_DESTINATION_URI": f"s3://{bucket}/out/",
        "EXPORTJOBS_EXPORT_NAME": "ej",
        "EXPORTJOBS_EXPORT_NAMESPACE": namespace,
        "EXPORTJOBS_KUBE_API_URL": server,
        "EXPORTJOBS_KUBE_TOKEN_FILE": str(token_file),
        "EXPORTJOBS_KUBE_CA_FILE": str(ca),
        "EXPORTJOBS_PROGRESS_INTERVAL_SECONDS": "0.1",
        "EXPORTJOBS_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
    }
    return subprocess.run(
        [sys.executable, "-m", "export_processor.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_progress_is_patched_with_a_service_account_token(
    cluster: LocalCluster,
    kube_api: k8s.ApiClient,
    exportjob_crd: None,
    namespace: str,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    create_exportjob(kube_api, namespace, s3_bucket)
    token = service_account_token(kube_api, namespace, allowed=True)
    done = _run(
        cluster=cluster,
        tmp_path=tmp_path,
        namespace=namespace,
        token=token,
        s3=s3_client,
        bucket=s3_bucket,
    )
    assert done.returncode == 0, done.stderr
    assert "progress patch failed" not in done.stderr
    result = json.loads(done.stdout)
    job = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "exportjobs.dev", "v1alpha1", namespace, "exportjobs", "ej"
    )
    assert job["status"]["progress"] == {
        "bytesRead": result["bytesRead"],
        "bytesTotal": result["bytesRead"],
        "rows": 200_000,
        "percent": 100,
    }


def test_a_refused_patch_does_not_fail_the_export(
    cluster: LocalCluster,
    kube_api: k8s.ApiClient,
    exportjob_crd: None,
    namespace: str,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    create_exportjob(kube_api, namespace, s3_bucket)
    token = service_account_token(kube_api, namespace, allowed=False)
    done = _run(
        cluster=cluster,
        tmp_path=tmp_path,
        namespace=namespace,
        token=token,
        s3=s3_client,
        bucket=s3_bucket,
    )
    assert done.returncode == 0, done.stderr
    assert "progress patch failed (ignored): HTTP 403" in done.stderr
    job = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "exportjobs.dev", "v1alpha1", namespace, "exportjobs", "ej"
    )
    assert "progress" not in job.get("status", {})
