"""hack/callback_receiver.py (the demo's receiver): its `verify` is the docs example verbatim, and
it accepts what the operator's signing module sends and refuses anything else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_operator.controller.signing import parse_secret, signed_headers
from tests.support.cluster import REPO

SCRIPT = REPO / "hack" / "callback_receiver.py"


def test_verify_is_the_docs_example_verbatim() -> None:
    docs = (REPO / "docs" / "notifications.md").read_text()
    example = re.search(r"```python\n(import base64.*?)```", docs, re.S)
    assert example
    docs_function = example.group(1).split("\n\n", 1)[1].strip()
    script = SCRIPT.read_text()
    start = script.index("def verify(")
    script_function = script[start : script.index("\n\n\n", start)].strip()
    assert script_function == docs_function


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--state-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    url = env["EXPORTJOBS_DEMO_CALLBACK_URL"]
    try:
        yield url, tmp_path
    finally:
        subprocess.run(
            [sys.executable, str(SCRIPT), "stop", "--state-dir", str(tmp_path)], check=True
        )


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the receiver is still starting


def test_signed_events_are_verified_and_others_refused(receiver: tuple[str, Path]) -> None:
    url, state = receiver
    secret = (state / "secrets" / "secret-0").read_text()
    event = {"type": "dev.exportjobs.export.succeeded", "subject": "x", "data": {"status": "ok"}}
    body = json.dumps(event).encode()
    headers = signed_headers(
        keys=(parse_secret(secret),), msg_id="u.succeeded", timestamp=int(time.time()), body=body
    )
    assert post(url, body, headers) == 204
    assert post(url, body + b" ", headers) == 401
    stale = signed_headers(
        keys=(parse_secret(secret),),
        msg_id="u.succeeded",
        timestamp=int(time.time()) - 3600,
        body=body,
    )
    assert post(url, body, stale) == 401
    waited = subprocess.run(
        [sys.executable, str(SCRIPT), "wait", "--state-dir", str(state), "--timeout", "5"],
        capture_output=True,
        text=True,
    )
    assert waited.returncode == 0, waited.stderr
    assert "signature verified: True" in waited.stdout
    assert "dev.exportjobs.export.succeeded for x" in waited.stdout
