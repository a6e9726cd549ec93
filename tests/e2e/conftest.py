"""The end-to-end tier: the product installed by Helm, its pods run by a real kubelet.

By default the tier starts its own local cluster with the real node (`hack/cluster.sh` with
EXPORTJOBS_REAL_NODE=1; it waits while another cluster on the machine holds the node), builds both
images from this tree (hack/images.sh), imports them into the node's containerd and installs
charts/exportjobs with default-like values. It then talks to the product as a user does: the
webhook through a port-forward to its Service, kubectl, and S3.

Against any other cluster (kind, EKS): `hack/e2e.sh` (see its header) sets
EXPORTJOBS_TEST_KUBECONFIG, the AWS_* variables of an S3 endpoint this machine reaches,
EXPORTJOBS_E2E_S3_ENDPOINT (the same S3 as the pods reach it), and EXPORTJOBS_E2E_OPERATOR_IMAGE /
EXPORTJOBS_E2E_PROCESSOR_IMAGE (images the cluster can run)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import cluster as local_cluster
from tests.support import e2e_diagnostics, hack_modules
from tests.support.cluster import REPO
from tests.support.e2e_stack import (
    E2ECluster,
    Images,
    _docker,
    _tool_path,
    s3_client,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed test's report ends with the cluster's state (tests/support/e2e_diagnostics.py)."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    cluster = funcargs.get("e2e_cluster")
    if not (report.failed and isinstance(cluster, E2ECluster)):
        return
    product = funcargs.get("product")
    local_dir = cluster.local.local_dir if cluster.local else None
    namespace = getattr(product, "namespace", None)
    report.sections.append(
        ("e2e diagnostics", e2e_diagnostics.report(cluster.env, namespace, local_dir))
    )


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


@pytest.fixture(scope="package")
def e2e_s3(e2e_cluster: E2ECluster) -> Any:
    return s3_client(e2e_cluster.env)


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
    stack_module = hack_modules.load("stack")
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
