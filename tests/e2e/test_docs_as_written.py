"""The README's install and first API calls, and the commands NOTES.txt prints, run as written.

The commands are taken from README.md ("Install on a cluster": the `helm install` by hand; "The
API": the curl calls) and from the NOTES of that install (`helm status`), and run with bash on the
tier's cluster. What is substituted, and nothing else (README.md says the same):

- images: `image.<c>.tag=dev` -> the image the tier built (repository, tag, pull policy);
- endpoints: `http://minio.minio:9000` -> S3 as the pods reach it; the port-forward's local port
  8080 -> a free port;
- secrets: `s3.accessKeyId=...` / `s3.secretAccessKey=...` -> that S3's keys.

`$URL` is the port-forward NOTES step 1 starts, `$TOKEN` what NOTES step 2 takes, `$ID` the id
the first POST answers and `<id>` the one of NOTES step 3. The buckets and input objects the
commands name are made first (a small CSV each), and `s3-event.json` is the S3 notification of
one of them. The reading calls (GET, list, DELETE) run once the exports have finished, so the
DELETE answers 409 as documented. `kubectl get -w` runs until stopped and is left out. Every
export must reach Succeeded.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.docs_blocks import REPO, block
from tests.support.e2e_stack import E2ECluster, Images

NAMESPACE = "exportjobs"  # what the README installs into
INPUTS = {
    "exports-input": ["reports/2026-11.csv", "q1.csv", "reports/2024.csv"],
    "datasets": ["5f0c6a59-3f5e-4a55-9d59-8e7f2a4c2b11.csv"],
}
BUCKETS = ("exports", "exports-input", "datasets")
CSV = b"id,name,amount\n1,alpha,3.5\n2,beta,4\n"
S3_EVENT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "exports-input"},
                "object": {"key": "q1.csv", "size": len(CSV)},
            },
        }
    ]
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Shell:
    """bash in the repository with the cluster's environment and the doc's variables."""

    def __init__(self, cluster: E2ECluster, workdir: Path) -> None:
        self.env = {**cluster.env}
        self.workdir = workdir
        self.ran: list[str] = []

    def run(self, command: str, timeout: float = 240, cwd: Path | None = None) -> str:
        self.ran.append(command)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=cwd or self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout


class Rule:
    """The documented substitutions; each must apply somewhere (a doc that drifts fails)."""

    def __init__(self, cluster: E2ECluster, images: Images, port: int) -> None:
        def image(component: str, ref: str) -> str:
            repository, tag = ref.rsplit(":", 1)
            return (
                f"image.{component}.repository={repository} --set image.{component}.tag={tag} "
                f"--set image.{component}.pullPolicy={images.pull_policy}"
            )

        self.pairs = {
            "image.operator.tag=dev": image("operator", images.operator),
            "image.processor.tag=dev": image("processor", images.processor),
            "http://minio.minio:9000": cluster.s3_in_cluster,
            "s3.accessKeyId=...": f"s3.accessKeyId={cluster.env['AWS_ACCESS_KEY_ID']}",
            "s3.secretAccessKey=...": f"s3.secretAccessKey={cluster.env['AWS_SECRET_ACCESS_KEY']}",
            "127.0.0.1:8080": f"127.0.0.1:{port}",
            " 8080:": f" {port}:",
        }
        self.used: set[str] = set()

    def __call__(self, command: str) -> str:
        for literal, replacement in self.pairs.items():
            if literal in command:
                self.used.add(literal)
                command = command.replace(literal, replacement)
        return command


def _json_tail(output: str) -> Any:
    """The JSON body at the end of curl's output (after the headers with -i)."""
    return json.loads(output.strip().splitlines()[-1])


def _notes_commands(notes: str) -> list[str]:
    """The indented commands NOTES prints, continuation lines joined."""
    commands, current = [], ""
    for line in notes.splitlines():
        if not line.startswith("     ") or not line.strip():
            continue
        text = line.strip()
        if text.endswith("\\"):
            current += text[:-1] + " "
            continue
        commands.append(current + text)
        current = ""
    return commands


def _wait_succeeded(shell: Shell, ids: list[str], timeout: float = 240) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    phases: dict[str, str] = {}
    while time.monotonic() < deadline:
        for export_id in ids:
            phases[export_id] = shell.run(
                f"kubectl -n {NAMESPACE} get exportjob {export_id} -o jsonpath='{{.status.phase}}'"
            ).strip()
        if all(p in ("Succeeded", "Failed", "Cancelled") for p in phases.values()):
            break
        time.sleep(2)
    return phases


def _state(shell: Shell) -> str:
    """What the cluster shows, for a failure's message."""
    return subprocess.run(
        [
            "bash",
            "-c",
            f"kubectl -n {NAMESPACE} get exportjobs,jobs,pods -o wide; "
            f"kubectl -n {NAMESPACE} logs deploy/exportjobs-operator --tail=40",
        ],
        env=shell.env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout


@pytest.fixture
def inputs(e2e_s3: Any) -> None:
    for bucket in BUCKETS:
        try:
            e2e_s3.head_bucket(Bucket=bucket)
        except Exception:
            e2e_s3.create_bucket(Bucket=bucket)
    for bucket, keys in INPUTS.items():
        for key in keys:
            e2e_s3.put_object(Bucket=bucket, Key=key, Body=CSV)


@pytest.mark.timeout(900)
def test_readme_install_api_calls_and_notes_run_as_written(
    e2e_cluster: E2ECluster, e2e_images: Images, inputs: None, tmp_path: Path
) -> None:
    port = _free_port()
    rule = Rule(e2e_cluster, e2e_images, port)
    shell = Shell(e2e_cluster, REPO)
    install = block("README.md", "Install on a cluster", "helm install exportjobs").commands()
    api = block("README.md", "The API", "/v1/exports").commands()
    (tmp_path / "s3-event.json").write_text(json.dumps(S3_EVENT))
    forward: subprocess.Popen[str] | None = None
    try:
        for command in install:
            shell.run(rule(command), timeout=300)
        notes = shell.run(f"helm status exportjobs -n {NAMESPACE}").split("NOTES:", 1)[1]
        steps = _notes_commands(notes)
        port_forward = rule(next(c for c in steps if " port-forward " in c))
        forward = subprocess.Popen(
            shlex.split(port_forward),
            env=shell.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()
        token_step = next(c for c in steps if c.startswith("TOKEN="))
        shell.env["TOKEN"] = shell.run(f'{token_step}; printf %s "$TOKEN"')
        shell.env["URL"] = f"http://127.0.0.1:{port}"
        assert len(shell.env["TOKEN"]) >= 32

        # The README's API calls: the POSTs first, in the doc's order.
        ids: list[str] = []
        posts = [c for c in api if "-X POST" in c]
        for command in posts:
            out = shell.run(rule(command), cwd=tmp_path)  # where s3-event.json is
            if " -i " in command:
                assert re.match(r"HTTP/1\.1 202", out), out
                assert re.search(r"(?im)^location: /v1/exports/", out)
            body = _json_tail(out)
            ids += body.get("ids") or [body["id"]]
        shell.env["ID"] = ids[0]

        # NOTES step 3, then 4: its export and its polling commands.
        post = rule(next(c for c in steps if c.startswith("curl") and "-X POST" in c))
        out = shell.run(post)
        assert re.match(r"HTTP/1\.1 202", out), out
        notes_id = _json_tail(out)["id"]
        ids.append(notes_id)
        phases = _wait_succeeded(shell, ids)
        assert set(phases.values()) == {"Succeeded"}, (phases, _state(shell))
        for command in steps:
            if "<id>" in command and " -w" not in command:
                out = shell.run(rule(command).replace("<id>", notes_id))
                if command.startswith("curl"):
                    assert _json_tail(out)["status"] == "Succeeded"
                else:
                    assert "condition met" in out

        # The README's reading calls, once every export has finished.
        for command in (c for c in api if "-X POST" not in c):
            out = shell.run(rule(command))
            if "-X DELETE" in command:
                assert _json_tail(out)["code"] == "export-finished"  # "409 once finished"
            elif "/healthz" in command:
                assert "exportjobs_webhook_requests_total" in out
            else:
                body = _json_tail(out)
                assert "code" not in body, body
                if "items" in body:
                    assert body["items"] == []  # ?phase=Running, once all have finished
                else:
                    assert body["status"] == "Succeeded" and body["result"]["download_url"]
        assert rule.used == set(rule.pairs), f"unused substitutions: {set(rule.pairs) - rule.used}"
    finally:
        if forward is not None:
            forward.terminate()
            forward.communicate(timeout=10)  # and closes its pipe
        subprocess.run(
            ["helm", "uninstall", "exportjobs", "-n", NAMESPACE, "--wait", "--timeout", "120s"],
            env=shell.env,
            capture_output=True,
            check=False,
        )
        e2e_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
