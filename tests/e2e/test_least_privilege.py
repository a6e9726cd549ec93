"""The installed product holds no S3 root key: each component's pods read their own MinIO user's
keys (hack/stack.py, `s3.componentKeys`), which S3 refuses anything beyond the component's work.
The other tests of the tier show those keys suffice (every export, presigned download and
callback link of the tier runs with them)."""

from __future__ import annotations

import base64
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.e2e_stack import INPUT_BUCKET, OUTPUT_BUCKET, E2ECluster


def _keys(e2e_cluster: E2ECluster, namespace: str) -> dict[str, tuple[str, str]]:
    """(access key, secret key) of every Secret in `namespace` holding AWS keys, by name."""
    found = {}
    for secret in e2e_cluster.kubectl_json("-n", namespace, "get", "secrets")["items"]:
        data = secret.get("data") or {}
        if "AWS_ACCESS_KEY_ID" in data:
            found[secret["metadata"]["name"]] = (
                base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode(),
                base64.b64decode(data["AWS_SECRET_ACCESS_KEY"]).decode(),
            )
    return found


def _denied(call: Any) -> None:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] in {"AccessDenied", "403"}


def test_no_pod_gets_the_root_key_and_each_key_is_confined(
    product: Any, e2e_cluster: E2ECluster
) -> None:
    env = e2e_cluster.env
    keys = _keys(e2e_cluster, product.namespace)
    assert set(keys) == {
        "exportjobs-s3-processor",
        "exportjobs-s3-webhook",
        "exportjobs-s3-operator",
    }, keys
    assert env["AWS_ACCESS_KEY_ID"] not in {access for access, _ in keys.values()}
    deployments = e2e_cluster.kubectl_json("-n", product.namespace, "get", "deployments")
    for deployment in deployments["items"]:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
            component = deployment["metadata"]["name"].removeprefix("exportjobs-")
            assert refs == [f"exportjobs-s3-{component}"], (deployment["metadata"]["name"], refs)

    def client(name: str) -> Any:
        access, secret = keys[name]
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        )

    processor, webhook = client("exportjobs-s3-processor"), client("exportjobs-s3-webhook")
    _denied(lambda: processor.put_object(Bucket=INPUT_BUCKET, Key="forged.csv", Body=b"x"))
    _denied(lambda: processor.put_object(Bucket=OUTPUT_BUCKET, Key="elsewhere/x", Body=b"x"))
    _denied(lambda: processor.list_objects_v2(Bucket=INPUT_BUCKET))
    _denied(lambda: webhook.put_object(Bucket=OUTPUT_BUCKET, Key="exports/x", Body=b"x"))
    _denied(lambda: webhook.get_object(Bucket=INPUT_BUCKET, Key="anything.csv"))
