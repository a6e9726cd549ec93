"""The `exportjobs-webhook` command: --help, bad settings, JSON logs, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.net import free_port

COMMAND = str(Path(sys.executable).parent / "exportjobs-webhook")


def test_help() -> None:
    out = subprocess.run([COMMAND, "--help"], check=True, capture_output=True, text=True).stdout
    assert "EXPORTJOBS_WEBHOOK_" in out and "--port" in out


def test_invalid_settings_exit_2() -> None:
    env = {**os.environ, "EXPORTJOBS_WEBHOOK_FORMAT_RULES": "bucket=xlsx"}
    done = subprocess.run([COMMAND], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "EXPORTJOBS_WEBHOOK_FORMAT_RULES" in done.stderr or "xlsx" in done.stderr


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": f"https://127.0.0.1:{free_port()}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_serves_json_logs_and_stops_gracefully_on_sigterm(unreachable_kubeconfig: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(unreachable_kubeconfig),
        "EXPORTJOBS_WEBHOOK_PORT": str(port),
        "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
        "EXPORTJOBS_WEBHOOK_SHUTDOWN_TIMEOUT_SECONDS": "2",
    }
    process = subprocess.Popen([COMMAND], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert process.poll() is None, "the webhook exited"
                assert time.monotonic() < deadline, "the webhook did not start"
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/readyz", headers={"X-Request-Id": "probe-1"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        caught.value.close()
        assert caught.value.code == 503  # the API server is unreachable: not ready
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().splitlines() if line.strip()]
    process.stderr.close()
    access = [line for line in lines if line.get("request_id") == "probe-1" and "status" in line]
    assert access and access[0]["status"] == 503 and access[0]["level"] == "INFO"
