"""Smoke tests of the two container images with `docker run`, restricted as in the chart.

Opt-in: they need a Docker engine and a build (hack/images.sh installs and starts Debian's engine
if none answers, and builds or reuses the images: ~2-3 min cold, ~30 s warm). Run them with

    EXPORTJOBS_IMAGE_TESTS=1 .venv/bin/python -m pytest tests/e2e/images

Without the variable they are skipped, never run against stale images.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import LocalCluster
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[3]
TAG = os.environ.get("IMAGE_TAG", "dev")
OPERATOR_IMAGE = f"exportjobs-operator:{TAG}"
PROCESSOR_IMAGE = f"exportjobs-processor:{TAG}"
CRD = REPO / "charts" / "exportjobs" / "crds" / "exportjobs.dev_exportjobs.yaml"
# What the chart and the operator give every container: no root, nothing writable but /tmp.
RESTRICTED = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=64m",
    "--user",
    "65532:65532",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]

pytestmark = pytest.mark.skipif(
    os.environ.get("EXPORTJOBS_IMAGE_TESTS") != "1",
    reason="image smoke tests are opt-in: EXPORTJOBS_IMAGE_TESTS=1 (needs a Docker engine; "
    "hack/images.sh builds the images)",
)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(url: str, container: str, *, timeout: float = 60) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | str = "no answer"
    while time.monotonic() < deadline:
        try:
            last = _get(url)
            if last[0] == 200:
                return last
        except OSError as exc:
            last = repr(exc)
        running = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", container],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if running != "true":
            break
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr
    logs = "\n".join(line for line in logs.splitlines() if ".access" not in line)
    raise AssertionError(
        f"{url} never answered 200 (last: {last}); container logs:\n{logs[-3000:]}"
    )


@pytest.fixture(scope="module")
def crd(cluster: LocalCluster) -> None:
    """The ExportJob CRD on the test cluster (both control-plane commands list ExportJobs)."""
    subprocess.run(
        ["kubectl", "apply", "--server-side", "-f", str(CRD)], check=True, capture_output=True
    )
    subprocess.run(
        [
            "kubectl",
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/exportjobs.exportjobs.dev",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def portable_kubeconfig(cluster: LocalCluster, tmp_path: Path) -> Path:
    """The cluster's kubeconfig with certificates inlined and readable by the image's user."""
    flat = subprocess.run(
        [
            "kubectl",
            "config",
            "view",
            "--raw",
            "--flatten",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp_path / "kubeconfig"
    path.write_text(flat)
    path.chmod(0o644)
    return path


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"exportjobs-smoke-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_images_run_as_non_root_without_build_tools(images: None) -> None:
    for image in (OPERATOR_IMAGE, PROCESSOR_IMAGE):
        config = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", image], check=True, capture_output=True, text=True
            ).stdout
        )[0]["Config"]
        assert config["User"] == "65532:65532", image
        probe = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                *RESTRICTED,
                "--entrypoint",
                "sh",
                image,
                "-c",
                "id -u; for t in pip pip3 gcc cc make; do command -v $t; done; "
                "touch /opt/x 2>/dev/null && echo writable",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.stdout.split() == ["65532"], (image, probe.stdout, probe.stderr)


def test_processor_image_converts_an_object_on_local_s3(
    images: None, cluster: LocalCluster, s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(
        Bucket=s3_bucket, Key="in/sales.csv", Body=b"id,region,amount\n1,eu,2.5\n2,us,4\n3,eu,1\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user writes its termination message here
    env = {
        "AWS_ENDPOINT_URL": cluster.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": cluster.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": cluster.s3.secret_key,
        "AWS_DEFAULT_REGION": cluster.s3.region,
        # As the operator sets them on the Job's container: no arguments, only environment.
        "EXPORTJOBS_SOURCE_URI": f"s3://{s3_bucket}/in/sales.csv",
        "EXPORTJOBS_FORMAT": "jsonl",
        "EXPORTJOBS_DESTINATION_URI": f"s3://{s3_bucket}/out/",
        "EXPORTJOBS_EXPORT_NAME": "smoke",
        "EXPORTJOBS_TERMINATION_MESSAGE_PATH": "/out/termination-log",
    }
    flags = [f for key, value in env.items() for f in ("-e", f"{key}={value}")]
    result = subprocess.run(
        ["docker", "run", "--rm", *RESTRICTED, "-v", f"{out}:/out", *flags, PROCESSOR_IMAGE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout)
    assert reported["uri"] == f"s3://{s3_bucket}/out/smoke/sales.jsonl"
    assert reported["rows"] == 3
    assert json.loads((out / "termination-log").read_text())["sha256"] == reported["sha256"]
    body = s3_client.get_object(Bucket=s3_bucket, Key="out/smoke/sales.jsonl")["Body"].read()
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert [r["region"] for r in rows] == ["eu", "us", "eu"]


def _run_operator_image(
    container: str, kubeconfig: Path, env: dict[str, str], *command: str
) -> None:
    """Start the operator image detached, restricted as in the chart, with `kubeconfig`."""
    options = [f"--env={name}={value}" for name, value in env.items()]
    subprocess.run(
        ["docker", "run", "-d", "--name", container, *RESTRICTED, *options,
         "-v", f"{kubeconfig}:/etc/kubeconfig:ro", "--env=KUBECONFIG=/etc/kubeconfig",
         OPERATOR_IMAGE, *command],
        check=True,
        capture_output=True,
    )  # fmt: skip


def test_operator_image_serves_the_webhook_healthz_and_readyz(
    images: None, crd: None, namespace: str, portable_kubeconfig: Path, container_name: str
) -> None:
    port = free_port()
    env = {
        "EXPORTJOBS_WEBHOOK_NAMESPACE": namespace,
        "EXPORTJOBS_WEBHOOK_PORT": str(port),
        "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
    }
    _run_operator_image(container_name, portable_kubeconfig, env, "exportjobs-webhook")
    _wait_for(f"http://127.0.0.1:{port}/healthz", container_name)
    # Ready means its watch cache listed ExportJobs through the API server from inside the image.
    _wait_for(f"http://127.0.0.1:{port}/readyz", container_name)


def test_operator_image_serves_kopf_liveness(
    images: None, crd: None, namespace: str, portable_kubeconfig: Path, container_name: str
) -> None:
    """As uid 65532 with no passwd entry: kopf is given its identity, so it looks up no user."""
    port = free_port()
    env = {"EXPORTJOBS_NAMESPACE": namespace, "EXPORTJOBS_OPERATOR_LIVENESS_HOST": "127.0.0.1"}
    _run_operator_image(
        container_name, portable_kubeconfig, env,
        "exportjobs-operator", "--standalone", "--metrics-port", "0", "--liveness-port", str(port),
    )  # fmt: skip
    _wait_for(f"http://127.0.0.1:{port}/healthz", container_name)
