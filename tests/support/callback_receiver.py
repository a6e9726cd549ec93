"""Completion callbacks in the operator's cluster tests: a receiver on loopback that answers
from a script and records every delivery, the signing secrets as a mounted Secret's files, and
the checks of what arrives (the signature verified with docs/notifications.md's example)."""

from __future__ import annotations

import contextlib
import email.message
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.cluster import REPO
from tests.support.wait import wait_for

if TYPE_CHECKING:
    from tests.support.operator_process import Exports, OperatorProcess

SECRETS = (
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_bmV3LXNlY3JldC1mb3Itcm90YXRpb24tMDEyMzQ1Njc4OQ==",
)
"""Two valid at once, as during a rotation."""

Verify = Callable[[str, Any, bytes], bool]


def docs_verify() -> Verify:
    """The `verify` function of docs/notifications.md, run as printed there."""
    text = (REPO / "docs" / "notifications.md").read_text()
    match = re.search(r"```python\n(import base64.*?)```", text, re.S)
    assert match, "no verification example in docs/notifications.md"
    scope: dict[str, Any] = {}
    exec(compile(match.group(1), "docs/notifications.md", "exec"), scope)
    verify: Verify = scope["verify"]
    return verify


@dataclass
class Delivery:
    headers: email.message.Message
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


Reply = int | str | tuple[int, dict[str, str]]
"""A status code, `"reset"` (connection reset, no answer), or a status code with headers."""


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1 answering from a script (then 204), recording all."""

    replies: dict[str, list[Reply]] = field(default_factory=dict)
    """Per path: the answers to give, in order."""
    seen: list[tuple[str, Delivery]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def deliveries(self, path: str) -> list[Delivery]:
        return [d for p, d in list(self.seen) if p == path]


def start(operator: OperatorProcess, secrets_dir: Path, **settings: Any) -> None:
    settings.setdefault("notify_backoff_base_seconds", 0.2)
    settings.setdefault("notify_backoff_max_seconds", 0.4)
    operator.start(notify_secrets_file=secrets_dir, notify_timeout_seconds=5, **settings)


def notification(exports: Exports, name: str, state: str, *, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        note: dict[str, Any] = exports.status(name).get("notification") or {}
        return note if note.get("state") == state else None

    try:
        return wait_for(f"{name}'s notification to be {state}", probe, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {json.dumps(exports.status(name))}") from None


def events(exports: Exports, name: str) -> list[str]:
    listed = exports.core.list_namespaced_event(
        exports.namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in listed.items]


def assert_signed(delivery: Delivery) -> None:
    verify = docs_verify()
    for secret in SECRETS:
        assert verify(secret, delivery.headers, delivery.body), secret
    assert not verify("whsec_" + "QUFB" * 8, delivery.headers, delivery.body)
    assert not verify(SECRETS[0], delivery.headers, delivery.body + b" ")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.lstrip("/")
            with lock:
                rx.seen.append((path, Delivery(self.headers, body, time.monotonic())))
                script = rx.replies.get(path) or []
                reply: Reply = script.pop(0) if script else 204
            if reply == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            code, headers = reply if isinstance(reply, tuple) else (int(reply), {})
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def finish(self) -> None:
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rx.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rx
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A mounted Secret's layout: one file per key."""
    folder = tmp_path / "notify-secrets"
    folder.mkdir()
    for index, secret in enumerate(SECRETS):
        (folder / f"secret-{index}").write_text(secret)
    return folder


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORTJOBS_CALLBACK_ALLOWLIST", "127.0.0.0/8")
    monkeypatch.setenv("EXPORTJOBS_CALLBACK_ALLOW_HTTP", "true")
