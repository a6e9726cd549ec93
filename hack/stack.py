"""Run the whole product on the local cluster: the chart's CRD, ServiceAccounts, RBAC and Secrets
installed with Helm, then the operator, the webhook and the pod runner as local processes.

The operator and the webhook authenticate with tokens of the chart's own ServiceAccounts (made
with the TokenRequest API), and the processor with the processor's, so RBAC is exercised exactly
as in a cluster. Used by `make demo` (hack/demo.sh) and by the end-to-end tests.

    python hack/stack.py up --namespace NS      # prints `export` lines for the webhook URL/token
    python hack/stack.py down --namespace NS
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "exportjobs"
RELEASE = "exportjobs"
PROCESSOR_IMAGE = "exportjobs-processor:dev"


@dataclass
class Stack:
    namespace: str
    state_dir: Path
    webhook_url: str = ""
    token: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (self.state_dir / "pids").unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{result.stderr.strip()}")
    return result.stdout


def _service_account_kubeconfig(
    *, admin_kubeconfig: Path, namespace: str, service_account: str, out: Path
) -> Path:
    """A kubeconfig that authenticates as `service_account` with a fresh bound token."""
    token = _run(
        "kubectl",
        "--kubeconfig",
        str(admin_kubeconfig),
        "-n",
        namespace,
        "create",
        "token",
        service_account,
        "--duration",
        "12h",
    ).strip()
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": service_account,
                "context": {"cluster": "local", "user": service_account, "namespace": namespace},
            }
        ],
        "current-context": service_account,
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


def _wait_http(url: str, *, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url} never came up; exit {proc.returncode}; log {log}:\n"
                + log.read_text()[-3000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout}s (log {log})")


def up(
    *,
    namespace: str,
    state_dir: Path,
    extra_operator_env: dict[str, str] | None = None,
    extra_webhook_env: dict[str, str] | None = None,
) -> Stack:
    """Install the chart's objects into `namespace` and start the three local processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    admin = Path(os.environ["KUBECONFIG"])
    token = secrets.token_urlsafe(32)
    s3 = {
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    values = {
        "exportsNamespace": namespace,
        "image": {
            "processor": {
                "repository": PROCESSOR_IMAGE.split(":")[0],
                "tag": PROCESSOR_IMAGE.split(":")[1],
            }
        },
        "s3": {
            "endpointUrl": s3["endpoint"],
            "region": s3["region"],
            "accessKeyId": s3["key"],
            "secretAccessKey": s3["secret"],
            "defaultDestination": "s3://exports-output/exports/",
        },
        "auth": {"tokens": [token]},
        # The operator and webhook run as local processes here (the nodes are simulated).
        "webhook": {"replicas": 0},
        "operator": {"replicas": 0},
    }
    values_file = state_dir / "values.json"
    values_file.write_text(json.dumps(values))
    values_file.chmod(0o600)
    _run(
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
        "60s",
    )

    sa = {c: f"{RELEASE}-{c}" for c in ("webhook", "operator", "processor")}
    kubeconfigs = {
        c: _service_account_kubeconfig(
            admin_kubeconfig=admin,
            namespace=namespace,
            service_account=sa[c],
            out=state_dir / f"{c}.kubeconfig",
        )
        for c in ("webhook", "operator")
    }
    s3_secret = _run(
        "kubectl",
        "-n",
        namespace,
        "get",
        "secret",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "json",
    )
    s3_secret_name = next(
        item["metadata"]["name"]
        for item in json.loads(s3_secret)["items"]
        if "AWS_SECRET_ACCESS_KEY" in item.get("data", {})
    )
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    # Completion callbacks (hack/callback_receiver.py in the demo): passed through when set.
    base |= {k: v for k, v in os.environ.items() if k.startswith("EXPORTJOBS_CALLBACK_")}
    notify = {k: v for k, v in os.environ.items() if k.startswith("EXPORTJOBS_OPERATOR_NOTIFY_")}
    rules = {k: v for k, v in os.environ.items() if k == "EXPORTJOBS_WEBHOOK_CALLBACK_RULES"}
    base["PATH"] = f"{REPO / '.venv' / 'bin'}:{base.get('PATH', '')}"
    aws = {
        "AWS_ENDPOINT_URL": s3["endpoint"],
        "AWS_ACCESS_KEY_ID": s3["key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret"],
        "AWS_DEFAULT_REGION": s3["region"],
    }
    webhook_port, metrics_port, liveness_port = _free_port(), _free_port(), _free_port()
    stack = Stack(
        namespace=namespace,
        state_dir=state_dir,
        webhook_url=f"http://127.0.0.1:{webhook_port}",
        token=token,
    )
    operator_env = {
        **base,
        "KUBECONFIG": str(kubeconfigs["operator"]),
        "EXPORTJOBS_NAMESPACE": namespace,
        "EXPORTJOBS_OPERATOR_PROCESSOR_IMAGE": PROCESSOR_IMAGE,
        "EXPORTJOBS_OPERATOR_SERVICE_ACCOUNT": sa["processor"],
        "EXPORTJOBS_OPERATOR_PROCESSOR_ENV_SECRET": s3_secret_name,
        "EXPORTJOBS_OPERATOR_PROCESSOR_ENV": json.dumps(
            {"AWS_ENDPOINT_URL": s3["endpoint"], "AWS_DEFAULT_REGION": s3["region"]}
        ),
        "EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI": "s3://exports-output/exports/",
        "EXPORTJOBS_OPERATOR_DATASET_URI_TEMPLATE": "s3://datasets/{dataset_id}.csv",
        "EXPORTJOBS_OPERATOR_METRICS_HOST": "127.0.0.1",
        "EXPORTJOBS_OPERATOR_METRICS_PORT": str(metrics_port),
        "EXPORTJOBS_OPERATOR_LIVENESS_HOST": "127.0.0.1",
        "EXPORTJOBS_OPERATOR_LIVENESS_PORT": str(liveness_port),
        "EXPORTJOBS_OPERATOR_STANDALONE": "true",
        **notify,
        **(extra_operator_env or {}),
    }
    webhook_env = {
        **base,
        **aws,
        "KUBECONFIG": str(kubeconfigs["webhook"]),
        "EXPORTJOBS_WEBHOOK_NAMESPACE": namespace,
        "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
        "EXPORTJOBS_WEBHOOK_PORT": str(webhook_port),
        "EXPORTJOBS_WEBHOOK_TOKENS": token,
        "EXPORTJOBS_WEBHOOK_DESTINATION_URI": "s3://exports-output/exports/",
        **rules,
        **(extra_webhook_env or {}),
    }
    runner_env = {**base, "KUBECONFIG": str(admin)}
    commands = {
        "operator": (["exportjobs-operator"], operator_env),
        "webhook": (["exportjobs-webhook"], webhook_env),
        "pod-runner": (
            [
                sys.executable,
                str(REPO / "hack" / "pod_runner.py"),
                "--namespace",
                namespace,
                "--workdir",
                str(state_dir),
            ],
            runner_env,
        ),
    }
    try:
        for name, (argv, env) in commands.items():
            with (state_dir / f"{name}.log").open("ab") as log:
                stack.processes[name] = subprocess.Popen(
                    argv, env=env, stdout=log, stderr=log, start_new_session=True
                )
        (state_dir / "pids").write_text("\n".join(str(p.pid) for p in stack.processes.values()))
        _wait_http(
            f"{stack.webhook_url}/readyz",
            proc=stack.processes["webhook"],
            log=state_dir / "webhook.log",
            timeout=60,
        )
        _wait_http(
            f"http://127.0.0.1:{liveness_port}/healthz",
            proc=stack.processes["operator"],
            log=state_dir / "operator.log",
            timeout=60,
        )
    except BaseException:
        stack.stop()
        raise
    return stack


def down(*, namespace: str, state_dir: Path) -> None:
    pids = state_dir / "pids"
    if pids.exists():
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGTERM)
        pids.unlink()
    subprocess.run(
        ["helm", "uninstall", RELEASE, "--namespace", namespace], capture_output=True, check=False
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--namespace", default="exportjobs")
    parser.add_argument("--state-dir", default=str(REPO / ".local" / "stack"))
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    if args.command == "down":
        down(namespace=args.namespace, state_dir=state_dir)
        return 0
    stack = up(namespace=args.namespace, state_dir=state_dir)
    print(f"export EXPORTJOBS_URL={stack.webhook_url}")
    print(f"export EXPORTJOBS_TOKEN={stack.token}")
    print(f"export EXPORTJOBS_NAMESPACE={args.namespace}")
    # Detach: the processes keep running (own sessions) until `down`.
    return 0


if __name__ == "__main__":
    sys.exit(main())
