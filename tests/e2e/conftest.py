"""The end-to-end tier: the product installed by Helm, its pods run by a real kubelet.

By default the tier starts its own local cluster with the real node (`hack/cluster.sh` with
EXPORTJOBS_REAL_NODE=1; it waits while another cluster on the machine holds the node), builds both
images from this tree (hack/images.sh), imports them into the node's containerd and installs
charts/exportjobs with default-like values. It then talks to the product as a user does: the
webhook through a port-forward to its Service, kubectl, and S3.

Against any other cluster (kind, EKS): `hack/e2e.sh` (see its header) sets
EXPORTJOBS_TEST_KUBECONFIG, the AWS_* variables of an S3 endpoint this machine reaches,
EXPORTJOBS_E2E_S3_ENDPOINT (the same S3 as the pods reach it), and EXPORTJOBS_E2E_OPERATOR_IMAGE /
EXPORTJOBS_E2E_PROCESSOR_IMAGE (images the cluster can run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support import cluster as local_cluster
from tests.support.cluster import REPO
from tests.support.wait import wait_for

INPUT_BUCKET = "exports-input"
OUTPUT_BUCKET = "exports-output"


def _load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("exportjobs_stack", REPO / "hack" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclass
class E2ECluster:
    """The cluster of the tier, with what the tests need to reach it."""

    env: dict[str, str]
    """This process's environment plus KUBECONFIG, AWS_* and PATH with the tools."""
    s3_in_cluster: str
    local: local_cluster.LocalCluster | None

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            ["kubectl", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def kubectl_follow(self, *args: str) -> Follow:
        """A kubectl command left running (e.g. `logs -f`), its output read at the end."""
        proc = subprocess.Popen(
            ["kubectl", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Follow(proc)


@dataclass
class Follow:
    proc: subprocess.Popen[str]

    def wait_output(self, timeout: float) -> str:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


@pytest.fixture(scope="package")
def e2e_cluster() -> Iterator[E2ECluster]:
    if os.environ.get("EXPORTJOBS_TEST_KUBECONFIG"):
        started = local_cluster.start()
        env = {**os.environ, **started.env}
        env["PATH"] = _tool_path(env.get("PATH", ""))
        s3_in_cluster = os.environ.get("EXPORTJOBS_E2E_S3_ENDPOINT", started.s3.endpoint_url)
        yield E2ECluster(env=env, s3_in_cluster=s3_in_cluster, local=None)
        return
    started = local_cluster.start(real_node=True)
    try:
        env = {**os.environ, **started.env}
        # MinIO listens on the node's bridge address: the host and the pods reach it there.
        yield E2ECluster(env=env, s3_in_cluster=started.s3.endpoint_url, local=started)
    finally:
        started.stop()


def _tool_path(path: str) -> str:
    out = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "path"], capture_output=True, text=True, check=True
    ).stdout
    return ":".join([*out.split(), path])


def s3_client(env: dict[str, str]) -> Any:
    """An S3 client of the cluster's S3 server (its AWS_* variables), the tier's buckets made."""
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)
    return client


@pytest.fixture(scope="package")
def e2e_s3(e2e_cluster: E2ECluster) -> Any:
    return s3_client(e2e_cluster.env)


@dataclass(frozen=True)
class Images:
    operator: str
    processor: str
    pull_policy: str


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="package")
def e2e_images(e2e_cluster: E2ECluster) -> Images:
    """Both images from this tree, in the node's containerd; or the ones named for another
    cluster (EXPORTJOBS_E2E_OPERATOR_IMAGE / EXPORTJOBS_E2E_PROCESSOR_IMAGE)."""
    given = (
        os.environ.get("EXPORTJOBS_E2E_OPERATOR_IMAGE"),
        os.environ.get("EXPORTJOBS_E2E_PROCESSOR_IMAGE"),
    )
    if given[0] and given[1]:
        return Images(
            given[0], given[1], os.environ.get("EXPORTJOBS_E2E_PULL_POLICY", "IfNotPresent")
        )
    assert e2e_cluster.local is not None, (
        "with EXPORTJOBS_TEST_KUBECONFIG, name the images: EXPORTJOBS_E2E_OPERATOR_IMAGE and "
        "EXPORTJOBS_E2E_PROCESSOR_IMAGE"
    )
    # A tag of this session for the build (other trees may build at the same time), then a tag
    # named by the image's content: the node imports an image once, whoever built it.
    session_tag = f"e2e-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [str(REPO / "hack" / "images.sh"), "build"],
        env={**os.environ, "IMAGE_TAG": session_tag},
        check=True,
    )
    names = []
    for image in ("exportjobs-operator", "exportjobs-processor"):
        image_id = _docker("image", "inspect", "-f", "{{.Id}}", f"{image}:{session_tag}")
        content_ref = f"{image}:c-{image_id.removeprefix('sha256:')[:16]}"
        _docker("tag", f"{image}:{session_tag}", content_ref)
        _docker("rmi", f"{image}:{session_tag}")
        names.append(content_ref)
    subprocess.run(
        [str(REPO / "hack" / "node.sh"), "load", *names],
        env={**e2e_cluster.env, "EXPORTJOBS_LOCAL_DIR": str(e2e_cluster.local.local_dir)},
        check=True,
    )
    # Never pulled: the node has them, and no registry is reachable from it.
    return Images(names[0], names[1], "Never")


@pytest.fixture(scope="package")
def product(
    e2e_cluster: E2ECluster, e2e_images: Images, e2e_s3: Any, tmp_path_factory: Any
) -> Iterator[Any]:
    """The chart installed in a fresh namespace; `.webhook_url`, `.token`, `.namespace`."""
    stack_module = _load_stack_module()
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    state_dir: Path = tmp_path_factory.mktemp("stack")
    stack = stack_module.up(
        namespace=namespace,
        state_dir=state_dir,
        operator_image=e2e_images.operator,
        processor_image=e2e_images.processor,
        pull_policy=e2e_images.pull_policy,
        s3_endpoint=e2e_cluster.s3_in_cluster,
        env=e2e_cluster.env,
    )
    try:
        yield stack
    finally:
        stack.stop()
        stack_module.down(namespace=namespace, state_dir=state_dir, env=e2e_cluster.env)
        e2e_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


FINAL = {"Succeeded", "Failed", "Cancelled"}
"""The phases an export ends in."""


def call(
    product: Any, method: str, path: str, body: Any = None, *, reconnect_seconds: float = 90
) -> tuple[int, Any]:
    """One request to the product's webhook with its token: (status, JSON body).

    As a client must: a connection that fails (the port-forward follows one webhook pod, and a
    rollout or a node fault takes that pod away) is tried again on a new port-forward for up to
    `reconnect_seconds`; a POST carries an Idempotency-Key (the caller's, or a new one), so the
    retry of a request that was answered but whose answer was lost returns the same export."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {product.token}", "Content-Type": "application/json"}
    if method == "POST":
        headers["Idempotency-Key"] = uuid.uuid4().hex
    deadline = time.monotonic() + reconnect_seconds
    while True:
        request = urllib.request.Request(
            product.webhook_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except OSError:  # refused, reset, closed without an answer, timed out
            if time.monotonic() >= deadline:
                raise
            product.start_forward()


def answering(product: Any) -> None:
    """Wait until the webhook answers again through the port-forward (an upgrade rolled it)."""

    def probe() -> bool:
        try:
            return call(product, "GET", "/v1/exports", reconnect_seconds=0)[0] == 200
        except OSError:
            return False

    wait_for("the webhook after the upgrade", probe, timeout=120, interval=1)


def poll(product: Any, location: str, *, until: set[str], within: float = 180) -> Any:
    """GET `location` until its phase is in `until`; fail naming the phases seen."""
    deadline = time.monotonic() + within
    seen: list[str] = []
    while time.monotonic() < deadline:
        status, view = call(product, "GET", location)
        assert status == 200, view
        if not seen or seen[-1] != view["status"]:
            seen.append(view["status"])
        if view["status"] in until:
            return view
        time.sleep(0.25)
    raise AssertionError(f"never reached {until}; phases seen: {seen}")


def repeated_csv(path: Path, megabytes: int, row: Callable[[int], str]) -> None:
    """A CSV of about `megabytes` (header `id,ts,amount,note,category`): 10,000 rows made by
    `row(i)` (each ending in a line end), repeated."""
    block = "".join(row(i) for i in range(10_000)).encode()
    with path.open("wb") as f:
        f.write(b"id,ts,amount,note,category\n")
        for _ in range(max(1, (megabytes << 20) // len(block))):
            f.write(block)
