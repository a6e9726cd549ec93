"""The product as the chart installs it on the real node: the cluster, its images and S3, and
calls to the webhook."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from tests.support import cluster as local_cluster
from tests.support.cluster import REPO
from tests.support.wait import wait_for

INPUT_BUCKET = "exports-input"
OUTPUT_BUCKET = "exports-output"


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


@dataclass(frozen=True)
class Images:
    operator: str
    processor: str
    pull_policy: str


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


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
