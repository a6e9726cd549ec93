"""Session fixtures: the local cluster and S3 server, API and S3 clients, fresh namespaces.

Tests under tests/unit are marked `unit` and need nothing running; tests under tests/cluster are
marked `cluster` and start (or reuse) the local cluster on first use; tests/e2e are marked `e2e`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.support import cluster as local_cluster

CRD_FILE = local_cluster.REPO / "charts" / "exportjobs" / "crds" / "exportjobs.dev_exportjobs.yaml"

TIER_BY_FOLDER = {"unit": "unit", "cluster": "cluster", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.path)).relative_to(root).parts
        if parts and parts[0] in TIER_BY_FOLDER:
            item.add_marker(getattr(pytest.mark, TIER_BY_FOLDER[parts[0]]))


@pytest.fixture(scope="session")
def cluster() -> Iterator[local_cluster.LocalCluster]:
    """The local cluster and S3 server; its variables are exported to this process too, so
    subprocesses (kubectl, the three commands) and boto3 talk to it."""
    started = local_cluster.start()
    saved = {k: os.environ.get(k) for k in started.env}
    os.environ.update(started.env)
    try:
        yield started
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        started.stop()


@pytest.fixture(scope="session")
def kube_api(cluster: local_cluster.LocalCluster) -> Iterator[k8s.ApiClient]:
    """A synchronous kubernetes ApiClient for test assertions and setup."""
    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def crd(kube_api: k8s.ApiClient) -> str:
    """The chart's ExportJob CRD, applied (created or replaced) and Established; its name."""
    ext = k8s.ApiextensionsV1Api(kube_api)
    body = yaml.safe_load(CRD_FILE.read_text())
    name: str = body["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(body)
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + 30
    while True:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return name
        assert time.monotonic() < deadline, "the ExportJob CRD was not Established within 30 s"
        time.sleep(0.2)


@pytest.fixture
def namespace(kube_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def s3_client(cluster: local_cluster.LocalCluster) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint_url,
        aws_access_key_id=cluster.s3.access_key,
        aws_secret_access_key=cluster.s3.secret_key,
        region_name=cluster.s3.region,
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket per test, emptied and removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3_client.delete_objects(Bucket=name, Delete={"Objects": keys})
        for upload in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3_client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def versioned_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh bucket with versioning enabled, every version removed afterwards."""
    name = f"v-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield name
    finally:
        listed = s3_client.list_object_versions(Bucket=name)
        for item in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        for upload in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3_client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        s3_client.delete_bucket(Bucket=name)
