"""Install the whole product on a cluster with Helm and reach its webhook through a port-forward.

`helm upgrade --install` of charts/exportjobs with default-like values (image names and tags, pull
policy, the S3 endpoint and keys, the default destination and a fresh bearer token), waiting until
the webhook (2 replicas) and the operator are Ready; then `kubectl port-forward` to the webhook's
Service. Used by `make demo` (hack/demo.sh) and the end-to-end tests, against the local cluster's
real node or any cluster given by KUBECONFIG.

    python hack/stack.py up --namespace NS --operator-image IMG --processor-image IMG \
        [--s3-endpoint URL]      # prints `export` lines: EXPORTJOBS_URL, _TOKEN, _NAMESPACE
    python hack/stack.py down --namespace NS

The pods get least-privilege S3 keys: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are the S3
server's root keys, which only this script uses, to make one MinIO user per component
(`<namespace>-processor`, `-webhook`, `-operator`) with the policy of what it does
(export_operator.s3policy, through `s3-admin` built by hack/tools.sh); the chart gets those users'
keys (`s3.componentKeys`) and no root key. `--shared-s3-keys` gives every pod the root keys
instead (an S3 without MinIO's admin API). The endpoint the pods use comes from --s3-endpoint
(default AWS_ENDPOINT_URL). helm and kubectl are taken from PATH, after the tools hack/tools.sh
built (so `make demo-down` works from a bare shell).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "exportjobs"
RELEASE = "exportjobs"
DEFAULT_DESTINATION = "s3://exports-output/exports/"


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the built tools (helm, kubectl) first
    on PATH."""
    env = dict(os.environ if base is None else base)
    result = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "path"], capture_output=True, text=True, check=False
    )
    dirs = [line for line in result.stdout.splitlines() if line]
    env["PATH"] = ":".join([*dirs, env.get("PATH", "")])
    return env


def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        args, env=tool_env(env), capture_output=True, text=True, check=False, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed:\n{result.stderr.strip()}")
    return result.stdout


def split_image(image: str) -> tuple[str, str]:
    """`repo[:tag]` → (repo, tag); a registry port is not a tag."""
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        return image, "latest"
    return repository, tag


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Stack:
    """The installed product: its namespace, a bearer token and a port-forward to the webhook."""

    namespace: str
    state_dir: Path
    token: str
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    chart_values: dict[str, object] = field(default_factory=dict, repr=False)
    port: int = 0
    forward: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def webhook_url(self) -> str:
        """The webhook through the port-forward, restarted if it ended (it follows one pod:
        when that pod goes, kubectl port-forward exits)."""
        if self.forward is None or self.forward.poll() is not None:
            self.start_forward()
        return f"http://127.0.0.1:{self.port}"

    def start_forward(self, timeout: float = 60) -> None:
        if self.forward is not None and self.forward.poll() is None:
            self.forward.kill()
            self.forward.wait()
        deadline = time.monotonic() + timeout
        while True:
            self.port = _free_port()
            log = (self.state_dir / "port-forward.log").open("ab")
            self.forward = subprocess.Popen(
                [
                    "kubectl",
                    "-n",
                    self.namespace,
                    "port-forward",
                    f"svc/{RELEASE}-webhook",
                    f"{self.port}:80",
                ],
                env=tool_env(self.env),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            (self.state_dir / "port-forward.pid").write_text(str(self.forward.pid))
            while time.monotonic() < deadline and self.forward.poll() is None:
                if _ready(f"http://127.0.0.1:{self.port}/readyz"):
                    return
                time.sleep(0.2)
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no port-forward to the webhook within {timeout}s "
                    f"(log {self.state_dir / 'port-forward.log'})"
                )
            time.sleep(0.5)  # the forward ended (a pod went away): start another

    def upgrade(self, overrides: dict[str, object]) -> None:
        """`helm upgrade` with the install's values and these on top ({} puts them back)."""
        helm_install(
            self.namespace, self.state_dir, _merge(self.chart_values, overrides), env=self.env
        )

    def stop(self) -> None:
        if self.forward is not None and self.forward.poll() is None:
            self.forward.send_signal(signal.SIGTERM)
            try:
                self.forward.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.forward.kill()
                self.forward.wait()
        (self.state_dir / "port-forward.pid").unlink(missing_ok=True)


def _merge(base: dict[str, object], top: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def values(
    *,
    operator_image: str,
    processor_image: str,
    pull_policy: str,
    s3_endpoint: str,
    token: str,
    env: Mapping[str, str],
) -> dict[str, object]:
    """Default-like values: only images, pull policy, S3 endpoint and keys, tokens set."""
    op_repo, op_tag = split_image(operator_image)
    proc_repo, proc_tag = split_image(processor_image)
    return {
        "image": {
            "operator": {"repository": op_repo, "tag": op_tag, "pullPolicy": pull_policy},
            "processor": {"repository": proc_repo, "tag": proc_tag, "pullPolicy": pull_policy},
        },
        "s3": {
            "endpointUrl": s3_endpoint,
            "region": env.get("AWS_DEFAULT_REGION", "us-east-1"),
            "accessKeyId": env["AWS_ACCESS_KEY_ID"],
            "secretAccessKey": env["AWS_SECRET_ACCESS_KEY"],
            "defaultDestination": DEFAULT_DESTINATION,
            # The demo's and e2e tier's inputs (default: the dataset folder and format rules).
            "allowedSources": ["s3://exports-input/", "s3://datasets/"],
        },
        "auth": {"tokens": [token]},
        # One operator pod (the chart's default is two electing a leader through a Lease): the
        # e2e tier's operator tests and the demo expect exactly one; failover is tested in
        # tests/cluster/operator/test_resilience.py.
        "operator": {"replicas": 1},
    }


def s3_users(
    namespace: str, state_dir: Path, s3: Mapping[str, Any], *, env: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """One MinIO user per component, allowed what it does under the release's allowed sources
    and destinations (export_operator.s3policy): `s3.componentKeys` of the chart. Made with the
    root keys of `env`; running it again replaces each user's secret and policy."""
    from export_operator.s3policy import component_policies  # the venv's; `down` needs none

    sources = list(s3["allowedSources"])
    destinations = list(s3.get("allowedDestinations") or [s3["defaultDestination"]])
    keys: dict[str, dict[str, str]] = {}
    for component, policy in component_policies(sources, destinations).items():
        user = f"{namespace}-{component}"
        secret = secrets.token_urlsafe(24)
        policy_file = state_dir / f"s3-policy-{component}.json"
        policy_file.write_text(json.dumps(policy, indent=2))
        run(
            "s3-admin",
            "user",
            user,
            str(policy_file),
            env={**env, "S3_USER_SECRET": secret},
            timeout=90,
        )
        keys[component] = {"accessKeyId": user, "secretAccessKey": secret}
    return keys


def helm_install(
    namespace: str,
    state_dir: Path,
    chart_values: dict[str, object],
    *,
    env: Mapping[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    """`helm upgrade --install --wait`: returns once the Deployments are Ready."""
    values_file = state_dir / "values.json"
    values_file.write_text(json.dumps(chart_values))
    values_file.chmod(0o600)
    run(
        "helm",
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "240s",
        *extra,
        env=env,
        timeout=300,
    )


def up(
    *,
    namespace: str,
    state_dir: Path,
    operator_image: str,
    processor_image: str,
    s3_endpoint: str | None = None,
    pull_policy: str = "IfNotPresent",
    env: Mapping[str, str] | None = None,
    extra_values: dict[str, object] | None = None,
    shared_s3_keys: bool = False,
) -> Stack:
    """Install the chart into `namespace` and forward a local port to the webhook's Service.
    `env` (default: this process's) gives KUBECONFIG, PATH and the AWS_* keys: the S3 server's
    root keys, from which each component gets a user of its own (`s3_users`), unless
    `shared_s3_keys`."""
    env = dict(os.environ if env is None else env)
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    chart_values = values(
        operator_image=operator_image,
        processor_image=processor_image,
        pull_policy=pull_policy,
        s3_endpoint=s3_endpoint or env["AWS_ENDPOINT_URL"],
        token=token,
        env=env,
    )
    chart_values = _merge(chart_values, extra_values or {})
    if not shared_s3_keys:
        s3 = dict(cast("dict[str, Any]", chart_values["s3"]))
        s3["componentKeys"] = s3_users(namespace, state_dir, s3, env=env)
        s3["accessKeyId"] = s3["secretAccessKey"] = ""  # no pod gets the root keys
        chart_values["s3"] = s3
    helm_install(namespace, state_dir, chart_values, env=env)
    stack = Stack(
        namespace=namespace, state_dir=state_dir, token=token, env=env, chart_values=chart_values
    )
    stack.start_forward()
    return stack


def down(*, namespace: str, state_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Stop the port-forward and uninstall the release (the CRD and the namespace stay)."""
    pid_file = state_dir / "port-forward.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
    subprocess.run(
        ["helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s"],
        env=tool_env(env),
        capture_output=True,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--namespace", default="exportjobs")
    parser.add_argument("--state-dir", default=str(REPO / ".local" / "stack"))
    parser.add_argument("--operator-image", default="exportjobs-operator:dev")
    parser.add_argument("--processor-image", default="exportjobs-processor:dev")
    parser.add_argument("--pull-policy", default="IfNotPresent")
    parser.add_argument("--s3-endpoint", help="S3 endpoint as the pods reach it")
    parser.add_argument("--values", help="a JSON file of more chart values (merged on top)")
    parser.add_argument(
        "--shared-s3-keys",
        action="store_true",
        help="give every pod AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (default: a user each)",
    )
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    if args.command == "down":
        down(namespace=args.namespace, state_dir=state_dir)
        return 0
    stack = up(
        namespace=args.namespace,
        state_dir=state_dir,
        operator_image=args.operator_image,
        processor_image=args.processor_image,
        s3_endpoint=args.s3_endpoint,
        pull_policy=args.pull_policy,
        extra_values=json.loads(Path(args.values).read_text()) if args.values else None,
        shared_s3_keys=args.shared_s3_keys,
    )
    print(f"export EXPORTJOBS_URL={stack.webhook_url}")
    print(f"export EXPORTJOBS_TOKEN={stack.token}")
    print(f"export EXPORTJOBS_NAMESPACE={args.namespace}")
    # Detach: the port-forward keeps running (its own session) until `down`.
    return 0


if __name__ == "__main__":
    sys.exit(main())
