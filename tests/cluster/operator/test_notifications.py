"""Completion callbacks with the real API server, the real operator process and a receiver on
loopback: one signed event per final phase, retries with the same id, resumption after SIGKILL,
the retry window, 4xx and redirects, refused destinations. Signatures are checked with the
verification example of docs/notifications.md, exactly as printed there."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.support.callback_receiver import (
    Receiver,
    assert_signed,
    events,
    notification,
    start,
)
from tests.support.operator_process import Exports, OperatorProcess
from tests.support.tools import tool
from tests.support.wait import wait_for


@pytest.mark.usefixtures("allow_loopback")
def test_succeeded_failed_and_cancelled_each_deliver_once(
    exports: Exports, operator: OperatorProcess, receiver: Receiver, secrets_dir: Path
) -> None:
    start(operator, secrets_dir)
    exports.create("ok", notify={"url": receiver.url("ok")})
    exports.create("bad", backoffLimit=1, notify={"url": receiver.url("bad")})
    exports.create("stop", notify={"url": receiver.url("stop")})

    result = exports.succeed("ok")
    first = exports.wait_pod("bad")
    exports.run_pod(first)
    exports.finish_pod(first, exit_code=1, message="connection reset by peer")
    second = exports.wait_pod("bad", fresh={first.metadata.name})
    assert receiver.deliveries("bad") == [], "a callback for an attempt that is retried"
    exports.run_pod(second)
    exports.finish_pod(second, exit_code=1, message="connection reset by peer")
    pod = exports.wait_pod("stop")
    exports.run_pod(pod)
    exports.wait_phase("stop", "Running")
    exports.patch_spec("stop", {"cancel": True})

    for name in ("ok", "bad", "stop"):
        note = notification(exports, name, "Delivered")
        assert note["attempts"] == 1 and note["lastStatusCode"] == 204
        assert note["deliveredTime"] and note["lastAttemptTime"]
    time.sleep(2)  # nothing more arrives
    expected = {"ok": "succeeded", "bad": "failed", "stop": "cancelled"}
    for name, outcome in expected.items():
        (delivery,) = receiver.deliveries(name)
        assert_signed(delivery)
        event = delivery.event
        obj = exports.get(name)
        assert event["specversion"] == "1.0"
        assert event["type"] == f"dev.exportjobs.export.{outcome}"
        assert event["id"] == delivery.headers["webhook-id"]
        assert event["id"] == f"{obj['metadata']['uid']}.{outcome}"
        assert event["subject"] == name
        assert event["source"].endswith(f"/namespaces/{exports.namespace}/exportjobs")
        assert event["time"] == obj["status"]["completionTime"]
        data = event["data"]
        assert data["id"] == name and data["status"] == obj["status"]["phase"]
        assert data["callback_url"] == receiver.url(name)
    ok = receiver.deliveries("ok")[0].event["data"]
    assert ok["result"]["uri"] == result["uri"] and ok["result"]["rows"] == result["rows"]
    assert "X-Amz-Signature=" in ok["result"]["download_url"]
    assert ok["error"] is None
    bad = receiver.deliveries("bad")[0].event["data"]
    assert bad["attempts"] == 2 and bad["error"]["message"]
    assert receiver.deliveries("stop")[0].event["data"]["error"]["code"] == "CANCELLED"
    wait_for("the Delivered Event", lambda: "CallbackDelivered" in events(exports, "ok"))

    table = subprocess.run(
        [tool("kubectl"), "-n", exports.namespace, "get", "ej", "ok", "-o", "wide"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "NOTIFY" in table.splitlines()[0] and "Delivered" in table.splitlines()[1]


@pytest.mark.usefixtures("allow_loopback")
def test_503_reset_429_then_accepted_is_four_attempts_with_one_id(
    exports: Exports, operator: OperatorProcess, receiver: Receiver, secrets_dir: Path
) -> None:
    receiver.replies["flaky"] = [503, "reset", (429, {"Retry-After": "2"})]
    start(operator, secrets_dir)
    exports.create("flaky", notify={"url": receiver.url("flaky")})
    exports.succeed("flaky")
    note = notification(exports, "flaky", "Delivered")
    assert note["attempts"] == 4 and note["lastStatusCode"] == 204
    assert "lastError" not in note
    deliveries = receiver.deliveries("flaky")
    assert len(deliveries) == 4
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert len({d.event["id"] for d in deliveries}) == 1
    for delivery in deliveries:
        assert_signed(delivery)
    # Retry-After: 2 is honoured (the backoff alone would be at most 0.4 s).
    assert deliveries[3].at - deliveries[2].at >= 1.9


@pytest.mark.usefixtures("allow_loopback")
def test_sigkill_between_attempts_resumes_the_delivery(
    exports: Exports, operator: OperatorProcess, receiver: Receiver, secrets_dir: Path
) -> None:
    receiver.replies["killed"] = [503]
    start(operator, secrets_dir, notify_backoff_base_seconds=6, notify_backoff_max_seconds=6)
    exports.create("killed", notify={"url": receiver.url("killed")})
    exports.succeed("killed")
    pending = notification(exports, "killed", "Pending")
    assert pending["attempts"] == 1 and pending["lastStatusCode"] == 503
    operator.kill()  # SIGKILL between attempt 1 and attempt 2
    killed_at = time.monotonic()
    operator.start()
    note = notification(exports, "killed", "Delivered")
    assert note["attempts"] == 2
    deliveries = receiver.deliveries("killed")
    assert len(deliveries) == 2
    assert deliveries[0].headers["webhook-id"] == deliveries[1].headers["webhook-id"]
    assert deliveries[1].at > killed_at  # sent by the restarted process
    # The restarted operator kept the backoff (at least half of 6 s after attempt 1).
    assert deliveries[1].at - deliveries[0].at >= 1.9  # lastAttemptTime has 1 s precision


@pytest.mark.usefixtures("allow_loopback")
def test_down_past_the_window_fails_and_4xx_or_redirect_stop_at_once(
    exports: Exports, operator: OperatorProcess, receiver: Receiver, secrets_dir: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    receiver.replies["rejected"] = [400]
    receiver.replies["moved"] = [(307, {"Location": receiver.url("elsewhere")})]
    # The window starts at completionTime (the Job's, maybe seconds before the operator sees it):
    # 10 s leave room for several attempts even on a loaded machine.
    start(operator, secrets_dir, notify_window_seconds=10)
    exports.create("down", notify={"url": f"http://127.0.0.1:{closed_port}/hook"})
    exports.create("rejected", notify={"url": receiver.url("rejected")})
    exports.create("moved", notify={"url": receiver.url("moved")})
    for name in ("down", "rejected", "moved"):
        exports.succeed(name)

    down = notification(exports, "down", "Failed")
    assert down["attempts"] >= 2
    assert "retry window ended" in down["lastError"]
    assert "onnect" in down["lastError"], down["lastError"]
    assert "lastStatusCode" not in down
    rejected = notification(exports, "rejected", "Failed")
    assert rejected["attempts"] == 1 and rejected["lastStatusCode"] == 400
    assert "400" in rejected["lastError"]
    moved = notification(exports, "moved", "Failed")
    assert moved["attempts"] == 1 and moved["lastStatusCode"] == 307
    assert "redirect" in moved["lastError"]
    time.sleep(1)
    assert len(receiver.deliveries("rejected")) == 1
    assert receiver.deliveries("elsewhere") == []
    wait_for("the Failed Event", lambda: "CallbackFailed" in events(exports, "rejected"))


def test_disallowed_destinations_are_refused_at_delivery(
    exports: Exports,
    operator: OperatorProcess,
    receiver: Receiver,
    secrets_dir: Path,
    kube_api: k8s.ApiClient,
) -> None:
    # No allowance: the default policy (https only, public addresses only).
    start(operator, secrets_dir)
    cases = {
        "loopback": (f"https://127.0.0.1:{receiver.port}/loopback", "loopback"),
        "metadata": ("https://169.254.169.254/latest/meta-data/", "link-local"),
        "name": (f"https://localhost:{receiver.port}/name", "localhost resolves to"),
        "plain": (f"http://127.0.0.1:{receiver.port}/plain", "https"),
    }
    for name, (url, _) in cases.items():
        exports.create(name, notify={"url": url})
        exports.succeed(name)
    for name, (_, why) in cases.items():
        note = notification(exports, name, "Failed")
        assert why in note["lastError"], note
        assert note["attempts"] == 1 and "lastStatusCode" not in note
    assert receiver.seen == []
