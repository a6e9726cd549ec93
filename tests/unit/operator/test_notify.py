"""The notifier without a cluster: a receiver on loopback, a recording stand-in for the API.

The cluster tier (tests/cluster/operator/test_notifications.py) runs the same paths with the real
API server and the real operator process."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp import web

from export_operator.callbacks import CallbackPolicy
from export_operator.controller.apicalls import ApiError, KubeWriter
from export_operator.controller.notify import (
    Attempt,
    Notifier,
    backoff,
    build_event,
    classify,
    parse_retry_after,
)
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.signing import parse_secret, signature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class RecordingWriter:
    """Records status patches and Events, as KubeWriter would send them."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_next = 0

    async def patch_status(self, *, namespace: str, name: str, uid: str, status: Any) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ApiError(503, "unavailable")
        self.notes.append(dict(status["notification"]))

    async def post_event(self, **event: Any) -> None:
        self.events.append(event)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def body(
    url: str,
    *,
    phase: str = "Succeeded",
    uid: str = "u-1",
    note: dict[str, Any] | None = None,
    completed: dt.datetime | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "completionTime": _stamp(completed or dt.datetime.now(dt.UTC)),
        "attempts": 1,
    }
    if phase == "Succeeded":
        status["result"] = {"uri": "s3://out/r/x/x.csv", "bytes": 3, "rows": 1, "format": "csv"}
    if phase == "Failed":
        status["error"] = {"code": "BAD_CSV", "message": "row 3", "retryable": False}
    if note is not None:
        status["notification"] = note
    return {
        "metadata": {"name": "x", "namespace": "ns", "uid": uid, "creationTimestamp": "t"},
        "spec": {
            "source": {"uri": "s3://in/x.csv"},
            "format": "csv",
            "destination": {"uri": "s3://out/r/"},
            "notify": {"url": url},
        },
        "status": status,
    }


Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class Receiver:
    url: str
    replies: list[Reply]
    seen: list[tuple[dict[str, str], bytes]] = dataclasses.field(default_factory=list)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Receiver]:
    rx = Receiver(url="", replies=[])

    async def hook(request: web.Request) -> web.StreamResponse:
        rx.seen.append((dict(request.headers), await request.read()))
        reply = rx.replies.pop(0) if rx.replies else None
        return await reply(request) if reply else web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    rx.url = f"http://127.0.0.1:{server.port}/hook"
    yield rx


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def settings(**overrides: Any) -> OperatorSettings:
    base = OperatorSettings(
        notify_secrets=SECRET,
        notify_backoff_base_seconds=0.01,
        notify_backoff_max_seconds=0.05,
        notify_timeout_seconds=2,
        notify_presign_endpoint_url="http://127.0.0.1:9",
        callback_policy=CallbackPolicy.parse("127.0.0.0/8", allow_http=True),
    )
    return dataclasses.replace(base, **overrides)


async def settled(notifier: Notifier) -> None:
    tasks = [d.task for d in notifier.deliveries.values() if d.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert not notifier.deliveries, "the delivery did not end"


async def run(notifier: Notifier, obj: dict[str, Any]) -> RecordingWriter:
    writer = RecordingWriter()
    await notifier.start(cast(KubeWriter, writer))
    notifier.observe(event_type="ADDED", body=obj)
    await settled(notifier)
    return writer


async def test_delivered_once_signed_with_the_transition_snapshot(
    receiver: Receiver, aws: None
) -> None:
    notifier = Notifier(settings=settings(), clock=lambda: NOW)
    obj = body(receiver.url, completed=NOW)
    writer = RecordingWriter()
    await notifier.start(cast(KubeWriter, writer))
    notifier.observe(event_type="ADDED", body=obj)
    later = json.loads(json.dumps(obj))
    later["status"]["progress"] = {"percent": 100, "rows": 99}
    notifier.observe(event_type="MODIFIED", body=later)  # the same delivery, nothing new
    await settled(notifier)
    assert len(receiver.seen) == 1
    headers, raw = receiver.seen[0]
    expected = signature(
        keys=(parse_secret(SECRET),),
        msg_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=raw,
    )
    assert headers["webhook-signature"] == expected
    event = json.loads(raw)
    assert event["specversion"] == "1.0"
    assert event["type"] == "dev.exportjobs.export.succeeded"
    assert event["id"] == headers["webhook-id"] == "u-1.succeeded"
    assert event["subject"] == "x"
    assert event["source"] == "/apis/exportjobs.dev/v1alpha1/namespaces/ns/exportjobs"
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["data"]["progress"] is None  # as at the transition
    assert event["data"]["result"]["download_url"].startswith("http://127.0.0.1:9/out/r/x/x.csv")
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert writer.notes[-1]["state"] == "Delivered" and writer.notes[-1]["attempts"] == 1
    assert writer.events[-1]["reason"] == "CallbackDelivered"


@pytest.mark.parametrize(
    "forged", ["s3://out/r/other/x.csv", "s3://out/tenant-b/secret.csv", "s3://in/x.csv"]
)
async def test_a_result_outside_its_own_prefix_is_delivered_without_a_link(
    receiver: Receiver, aws: None, forged: str
) -> None:
    # Issue 11: the processor writes its termination message itself, so a result naming any
    # other object than <destination>/<id>/... must not become a presigned link.
    obj = body(receiver.url, completed=NOW)
    obj["status"]["result"]["uri"] = forged
    await run(Notifier(settings=settings(), clock=lambda: NOW), obj)
    [(_, raw)] = receiver.seen
    result = json.loads(raw)["data"]["result"]
    assert result["uri"] == forged and result["download_url"] is None


async def test_retries_503_429_then_delivers_with_the_same_id(receiver: Receiver) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def slow_down(_: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "0"})

    receiver.replies = [unavailable, slow_down]
    writer = await run(Notifier(settings=settings()), body(receiver.url, phase="Failed"))
    ids = {h["webhook-id"] for h, _ in receiver.seen}
    assert len(receiver.seen) == 3 and ids == {"u-1.failed"}
    assert [n["state"] for n in writer.notes] == ["Pending", "Pending", "Delivered"]
    assert [n["lastStatusCode"] for n in writer.notes] == [503, 429, 204]
    assert json.loads(receiver.seen[0][1])["data"]["error"]["code"] == "BAD_CSV"


async def test_a_400_stops_at_once(receiver: Receiver) -> None:
    async def bad(_: web.Request) -> web.Response:
        return web.Response(status=400)

    receiver.replies = [bad]
    writer = await run(Notifier(settings=settings()), body(receiver.url, phase="Cancelled"))
    assert len(receiver.seen) == 1
    assert writer.notes == [
        {
            "state": "Failed",
            "attempts": 1,
            "lastStatusCode": 400,
            "lastAttemptTime": writer.notes[0]["lastAttemptTime"],
            "deliveredTime": None,
            "lastError": "HTTP 400: the receiver refused the event",
        }
    ]
    assert writer.events[-1]["reason"] == "CallbackFailed"


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://127.0.0.1:1/elsewhere")

    receiver.replies = [moved]
    writer = await run(Notifier(settings=settings()), body(receiver.url))
    assert len(receiver.seen) == 1
    assert writer.notes[-1]["state"] == "Failed"
    assert "redirect" in writer.notes[-1]["lastError"]


async def test_down_past_the_window_fails_with_the_last_error() -> None:
    url = "http://127.0.0.1:1/hook"  # nothing listens
    notifier = Notifier(settings=settings(notify_window_seconds=0.3))
    obj = body(url)
    obj["status"]["completionTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    writer = await run(notifier, obj)
    final = writer.notes[-1]
    assert final["state"] == "Failed" and final["attempts"] >= 1
    assert "retry window ended" in final["lastError"]
    assert "Connect" in final["lastError"] or "refused" in final["lastError"].lower()


async def test_refused_destinations_fail_at_delivery_without_a_request() -> None:
    policy = CallbackPolicy()  # no allowance: loopback, http refused
    cases = {
        "http://hooks.example.com/h": "https",
        "https://127.0.0.1:1/h": "loopback",
        "https://169.254.169.254/latest": "link-local",
        "https://localhost:1/h": "localhost resolves to",
    }
    for url, why in cases.items():
        writer = await run(Notifier(settings=settings(callback_policy=policy)), body(url))
        assert writer.notes[-1]["state"] == "Failed", url
        assert why in writer.notes[-1]["lastError"], (url, writer.notes[-1])
        assert writer.notes[-1]["lastStatusCode"] is None


async def test_no_secret_means_no_unsigned_callback(receiver: Receiver) -> None:
    writer = await run(Notifier(settings=settings(notify_secrets="")), body(receiver.url))
    assert receiver.seen == []
    assert "no signing secret" in writer.notes[-1]["lastError"]


async def test_final_states_and_unfinished_phases_start_nothing() -> None:
    notifier = Notifier(settings=settings())
    await notifier.start(cast(KubeWriter, RecordingWriter()))
    notifier.observe(event_type="ADDED", body=body("https://a.example/h", phase="Running"))
    notifier.observe(
        event_type="ADDED", body=body("https://a.example/h", note={"state": "Delivered"})
    )
    obj = body("https://a.example/h")
    del obj["spec"]["notify"]
    notifier.observe(event_type="ADDED", body=obj)
    assert notifier.deliveries == {}


async def test_a_resumed_delivery_keeps_its_attempt_count(receiver: Receiver) -> None:
    last = _stamp(dt.datetime.now(dt.UTC))
    note = {"state": "Pending", "attempts": 3, "lastAttemptTime": last}
    writer = await run(Notifier(settings=settings()), body(receiver.url, note=note))
    assert len(receiver.seen) == 1
    assert writer.notes[-1]["attempts"] == 4 and writer.notes[-1]["state"] == "Delivered"


async def test_a_failing_status_write_is_retried(receiver: Receiver) -> None:
    notifier = Notifier(settings=settings())
    writer = RecordingWriter()
    writer.fail_next = 1
    await notifier.start(cast(KubeWriter, writer))
    notifier.observe(event_type="ADDED", body=body(receiver.url))
    await settled(notifier)
    assert writer.notes[-1]["state"] == "Delivered"
    assert len(receiver.seen) == 1


def test_classify_and_retry_after() -> None:
    assert classify(200, {}, now=NOW).verdict == "delivered"
    assert classify(301, {"Location": "x"}, now=NOW).verdict == "stop"
    assert classify(404, {}, now=NOW).verdict == "stop"
    assert classify(500, {}, now=NOW).verdict == "retry"
    limited = classify(429, {"Retry-After": "7"}, now=NOW)
    assert (limited.verdict, limited.retry_after, limited.label) == ("retry", 7.0, "429")
    date = "Fri, 02 Jan 2026 03:04:35 GMT"
    assert parse_retry_after(date, now=NOW) == 30.0
    assert parse_retry_after("soon", now=NOW) is None
    assert Attempt("retry").label == "network" and Attempt("stop").label == "refused"


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempts in range(1, 12):
        nominal = min(60.0, 2.0 * 2 ** (attempts - 1))
        delay = backoff(attempts, base=2.0, cap=60.0, rng=rng)
        assert nominal / 2 <= delay <= nominal


def test_event_ids_are_per_export_and_outcome() -> None:
    ok = build_event(body("https://a/h"), source_prefix="/s", download_url=None)
    failed = build_event(body("https://a/h", phase="Failed"), source_prefix="/s", download_url=None)
    other = build_event(body("https://a/h", uid="u-2"), source_prefix="/s", download_url=None)
    assert len({ok["id"], failed["id"], other["id"]}) == 3
    assert failed["type"] == "dev.exportjobs.export.failed"


async def test_a_late_event_from_before_the_final_state_starts_nothing(
    receiver: Receiver,
) -> None:
    notifier = Notifier(settings=settings())
    obj = body(receiver.url)
    writer = await run(notifier, obj)
    assert writer.notes[-1]["state"] == "Delivered"
    notifier.observe(event_type="MODIFIED", body=obj)  # written before Delivered, seen after
    assert notifier.deliveries == {}
    notifier.observe(event_type="DELETED", body=obj)
    assert notifier.done == {}
    assert len(receiver.seen) == 1


async def test_deleting_the_exportjob_ends_its_delivery(receiver: Receiver) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    receiver.replies = [unavailable]
    slow = settings(notify_backoff_base_seconds=30, notify_backoff_max_seconds=30)
    notifier = Notifier(settings=slow)
    writer = RecordingWriter()
    await notifier.start(cast(KubeWriter, writer))
    obj = body(receiver.url)
    notifier.observe(event_type="ADDED", body=obj)
    for _ in range(500):
        if writer.notes:
            break
        await asyncio.sleep(0.01)
    assert writer.notes[-1]["state"] == "Pending"
    (delivery,) = notifier.deliveries.values()
    notifier.observe(event_type="DELETED", body=obj)
    assert delivery.task is not None
    await asyncio.wait_for(asyncio.gather(delivery.task, return_exceptions=True), timeout=5)
    assert delivery.task.cancelled()
    assert notifier.deliveries == {} and len(receiver.seen) == 1


async def test_metrics_count_attempts_and_outcomes(receiver: Receiver) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    before = (
        sample("exportjobs_operator_notification_attempts_total", result="5xx"),
        sample("exportjobs_operator_notification_attempts_total", result="2xx"),
        sample("exportjobs_operator_notifications_total", outcome="delivered"),
        sample("exportjobs_operator_notification_attempt_seconds_count"),
    )
    receiver.replies = [unavailable]
    await run(Notifier(settings=settings()), body(receiver.url))
    after = (
        sample("exportjobs_operator_notification_attempts_total", result="5xx"),
        sample("exportjobs_operator_notification_attempts_total", result="2xx"),
        sample("exportjobs_operator_notifications_total", outcome="delivered"),
        sample("exportjobs_operator_notification_attempt_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 2]
