#!/usr/bin/env python3
"""A small completion-callback receiver for `make demo`: verifies each event's signature.

    python hack/callback_receiver.py start --state-dir DIR   # prints `export` lines to eval
    python hack/callback_receiver.py wait --state-dir DIR    # prints the first verified event
    python hack/callback_receiver.py stop --state-dir DIR

`start` makes a fresh signing secret (DIR/secrets/secret-0, the layout of a mounted Secret) and
runs the receiver in the background on 127.0.0.1; the printed variables let the webhook and the
operator send callbacks there (loopback and http allowed, S3 exports under exports-input/demo/
notify it). Only the Python standard library: this is what a receiver needs, nothing more.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


# The verification example of docs/notifications.md, verbatim (a unit test keeps them equal).
def verify(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
    """True when the event is signed with `secret` (whsec_...) and not older than `tolerance` s."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # a replay of an old delivery
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, sig.removeprefix("v1,"))
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


def serve(state_dir: Path, port: int, host: str = "127.0.0.1", fail_rate: float = 0.0) -> None:
    """Record each delivery in events.jsonl with the status answered: 204 when verified (or 500,
    a receiver failing, for a `fail_rate` share of them), 401 when not."""
    secret = (state_dir / "secrets" / "secret-0").read_text().strip()
    events = state_dir / "events.jsonl"
    chance = random.Random()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = verify(secret, self.headers, body)
            status = (500 if chance.random() < fail_rate else 204) if ok else 401
            record = {
                "verified": ok,
                "webhook-id": self.headers.get("webhook-id"),
                "status": status,
            }
            if ok:
                record["event"] = json.loads(body)
            with events.open("a") as out:
                out.write(json.dumps(record) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    ThreadingHTTPServer((host, port), Handler).serve_forever()


def start(state_dir: Path, host: str = "127.0.0.1", fail_rate: float = 0.0) -> None:
    stop(state_dir)
    (state_dir / "secrets").mkdir(parents=True, exist_ok=True)
    secret_file = state_dir / "secrets" / "secret-0"
    secret_file.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    secret_file.chmod(0o600)
    (state_dir / "events.jsonl").write_text("")
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    with (state_dir / "receiver.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "serve",
                "--state-dir",
                str(state_dir),
                "--port",
                str(port),
                "--host",
                host,
                "--fail-rate",
                str(fail_rate),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (state_dir / "pid").write_text(str(proc.pid))
    url = f"http://{host}:{port}/exports"
    print("export EXPORTJOBS_CALLBACK_ALLOWLIST=127.0.0.0/8")
    print("export EXPORTJOBS_CALLBACK_ALLOW_HTTP=true")
    print(f"export EXPORTJOBS_OPERATOR_NOTIFY_SECRETS_FILE={state_dir / 'secrets'}")
    print("export EXPORTJOBS_OPERATOR_NOTIFY_BACKOFF_BASE_SECONDS=1")
    print(f"export EXPORTJOBS_WEBHOOK_CALLBACK_RULES=exports-input/demo/={url}")
    print(f"export EXPORTJOBS_DEMO_CALLBACK_URL={url}")


def wait(state_dir: Path, timeout: float) -> int:
    events = state_dir / "events.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
        if lines:
            first = lines[0]
            event = first.get("event") or {}
            data = event.get("data") or {}
            print(f"received {event.get('type')} for {event.get('subject')}")
            print(f"  webhook-id {first['webhook-id']}; signature verified: {first['verified']}")
            result = (data.get("result") or {}).get("uri")
            print(f"  data.status {data.get('status')}, result {result}")
            return 0 if first["verified"] else 1
        time.sleep(0.5)
    print(f"no callback within {timeout:g} s", file=sys.stderr)
    return 1


def stop(state_dir: Path) -> None:
    pid_file = state_dir / "pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "serve", "wait", "stop"])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (the real node's 10.244.0.1, so that the operator's pod reaches it)",
    )
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of deliveries answered 500 (the soak)"
    )
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    if args.command == "start":
        start(state_dir, args.host, args.fail_rate)
    elif args.command == "serve":
        serve(state_dir, args.port, args.host, args.fail_rate)
    elif args.command == "wait":
        return wait(state_dir, args.timeout)
    else:
        stop(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
