"""Start, reuse or adopt the local cluster and S3 server for the test session.

`EXPORTJOBS_TEST_KUBECONFIG` names an existing cluster (for example a kind cluster) to use instead
of starting one; S3 then comes from `AWS_ENDPOINT_URL` and the usual AWS variables. Otherwise the
session runs `hack/cluster.sh up` in its own state folder (`.local/test-<pid>`, or
`EXPORTJOBS_TEST_LOCAL_DIR`) and stops it at the end. The end-to-end tier starts a second cluster
with the real node (`real_node=True`, `.local/e2e-<pid>`): the machine has one real node, so that
start waits while another cluster holds it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "hack" / "cluster.sh"


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str


@dataclass
class LocalCluster:
    kubeconfig: Path
    s3: S3Endpoint
    env: dict[str, str] = field(default_factory=dict)
    """The variables of cluster.env (KUBECONFIG, AWS_*, PATH with the built tools)."""
    started_here: bool = False
    local_dir: Path | None = None
    name: str = "exportjobs-test"
    real_node: bool = False

    def stop(self) -> None:
        if self.started_here:
            subprocess.run(
                [str(CLUSTER_SCRIPT), "down"],
                env=_script_env(self.local_dir, self.name, real_node=self.real_node),
                check=True,
            )


def _script_env(
    local_dir: Path | None, name: str = "exportjobs-test", *, real_node: bool = False
) -> dict[str, str]:
    env = dict(os.environ)
    if local_dir is not None:
        env["EXPORTJOBS_LOCAL_DIR"] = str(local_dir)
        env["EXPORTJOBS_CLUSTER_NAME"] = name
    env["EXPORTJOBS_REAL_NODE"] = "1" if real_node else "0"
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """Evaluate an `export K=V` file with bash and return the exported values."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; source {shlex.quote(str(path))}; env -0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def start(*, real_node: bool = False) -> LocalCluster:
    existing = os.environ.get("EXPORTJOBS_TEST_KUBECONFIG")
    if existing:
        s3 = S3Endpoint(
            endpoint_url=os.environ["AWS_ENDPOINT_URL"],
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        env = {"KUBECONFIG": existing}
        return LocalCluster(kubeconfig=Path(existing), s3=s3, env=env)
    # One folder per test session, so that sessions running at once never share a cluster.
    if real_node:
        name = "exportjobs-e2e"
        default_dir = REPO / ".local" / f"e2e-{os.getpid()}"
        local_dir = Path(os.environ.get("EXPORTJOBS_E2E_LOCAL_DIR", default_dir))
    else:
        name = "exportjobs-test"
        default_dir = REPO / ".local" / f"test-{os.getpid()}"
        local_dir = Path(os.environ.get("EXPORTJOBS_TEST_LOCAL_DIR", default_dir))
    script_env = _script_env(local_dir, name, real_node=real_node)
    try:
        subprocess.run([str(CLUSTER_SCRIPT), "up"], env=script_env, check=True)
    except BaseException:
        # A failed or interrupted start leaves nothing running (and frees the real node).
        subprocess.run([str(CLUSTER_SCRIPT), "down"], env=script_env, check=False)
        raise
    values = read_env_file(local_dir / "cluster.env")
    keys = [
        "KUBECONFIG",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "PATH",
    ]
    env = {k: values[k] for k in keys}
    s3 = S3Endpoint(
        endpoint_url=values["AWS_ENDPOINT_URL"],
        access_key=values["AWS_ACCESS_KEY_ID"],
        secret_key=values["AWS_SECRET_ACCESS_KEY"],
        region=values["AWS_DEFAULT_REGION"],
    )
    return LocalCluster(
        kubeconfig=Path(values["KUBECONFIG"]),
        s3=s3,
        env=env,
        started_here=True,
        local_dir=local_dir,
        name=name,
        real_node=real_node,
    )
