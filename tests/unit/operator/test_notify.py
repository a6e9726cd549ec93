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
from typing import Any

import pytest
from aiohttp import web

from export_operator.callbacks import CallbackPolicy
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.delivery import Attempt, build_event, classify, parse_retry_after
from export_operator.controller.notify import Notifier
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.signing import parse_secret, signature
from export_operator.controller.snapshots import ExportView
from export_operator.controller.workqueue import run_worker
from export_operator.informer import Informer
from export_operator.kube import KubeError
from export_processor.common import Backoff
from tests.support.fake_kube import FakeKube

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


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
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": uid,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
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


def settings(*, callback_policy: CallbackPolicy | None = None, **given: Any) -> OperatorSettings:
    built = OperatorSettings.from_env(
        {},
        **{
            "notify_secrets": SECRET,
            "notify_backoff_base_seconds": 0.01,
            "notify_backoff_max_seconds": 0.05,
            "notify_timeout_seconds": 2,
            "notify_presign_endpoint_url": "http://127.0.0.1:9",
            **given,
        },
    )
    policy = callback_policy or CallbackPolicy.parse("127.0.0.0/8", allow_http=True)
    notify = built.notify.model_copy(update={"callback_policy": policy})
    return built.model_copy(update={"notify": notify})


class Harness:
    """A notifier on an ExportJob cache fed by hand, writing to the in-memory API."""

    def __init__(self, settings: OperatorSettings, **kwargs: Any) -> None:
        self.exports: Informer[ExportView] = Informer(
            api=None, path="/exportjobs", decode=ExportView.from_body
        )
        self.notifier = Notifier(settings=settings, exports=self.exports, **kwargs)
        self.exports.listeners.append(self.notifier.on_export)
        self.kube = FakeKube()
        self.notifier.writer = KubeWriter(self.kube)

    def event(self, type_: str, obj: dict[str, Any]) -> None:
        """A watch event; the object is in (or gone from) the API server as well."""
        path = f"/apis/exportjobs.dev/v1alpha1/namespaces/ns/exportjobs/{obj['metadata']['name']}"
        if type_ == "DELETED":
            self.kube.objects.pop(path, None)
        else:
            self.kube.objects[path] = obj
        self.exports.handle_event({"type": type_, "object": obj})

    @property
    def notes(self) -> list[dict[str, Any]]:
        """`status.notification` of every status patch sent."""
        return [dict(body["status"]["notification"]) for body in self.kube.bodies("patch", "")]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.kube.bodies("create", "/events")

    async def settle(self, *, until: Callable[[], bool] | None = None) -> None:
        """Run a worker until the delivery ended (a final state written) or `until` holds."""

        def ended() -> bool:
            # The final state is written, then its Event posted: wait for both (stopping at
            # the patch failed under load, the Event not yet posted).
            final = bool(self.notes) and self.notes[-1]["state"] in ("Delivered", "Failed")
            return final and any(e["reason"].startswith("Callback") for e in self.events)

        worker = asyncio.create_task(run_worker(self.notifier.queue, self.notifier.reconcile))
        try:
            for _ in range(1000):
                if (until or ended)():
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"the delivery did not end: {self.notes}")
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


async def run(h: Harness, obj: dict[str, Any]) -> Harness:
    h.event("ADDED", obj)
    await h.settle()
    return h


async def test_delivered_once_signed(receiver: Receiver, aws: None) -> None:
    h = Harness(settings(), clock=lambda: NOW)
    obj = body(receiver.url, completed=NOW)
    h.event("ADDED", obj)
    h.event("MODIFIED", obj)  # the same delivery: the key is queued once
    await h.settle()
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
    assert event["data"]["result"]["download_url"].startswith("http://127.0.0.1:9/out/r/x/x.csv")
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert h.notes[-1]["state"] == "Delivered" and h.notes[-1]["attempts"] == 1
    assert h.events[-1]["reason"] == "CallbackDelivered"


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
    await run(Harness(settings(), clock=lambda: NOW), obj)
    [(_, raw)] = receiver.seen
    result = json.loads(raw)["data"]["result"]
    assert result["uri"] == forged and result["download_url"] is None


async def test_retries_503_429_then_delivers_with_the_same_id(receiver: Receiver) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def slow_down(_: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "0"})

    receiver.replies = [unavailable, slow_down]
    h = await run(Harness(settings()), body(receiver.url, phase="Failed"))
    ids = {h["webhook-id"] for h, _ in receiver.seen}
    assert len(receiver.seen) == 3 and ids == {"u-1.failed"}
    assert [n["state"] for n in h.notes] == ["Pending", "Pending", "Delivered"]
    assert [n["lastStatusCode"] for n in h.notes] == [503, 429, 204]
    assert json.loads(receiver.seen[0][1])["data"]["error"]["code"] == "BAD_CSV"


async def test_a_400_stops_at_once(receiver: Receiver) -> None:
    async def bad(_: web.Request) -> web.Response:
        return web.Response(status=400)

    receiver.replies = [bad]
    h = await run(Harness(settings()), body(receiver.url, phase="Cancelled"))
    assert len(receiver.seen) == 1
    assert h.notes == [
        {
            "state": "Failed",
            "attempts": 1,
            "lastStatusCode": 400,
            "lastAttemptTime": h.notes[0]["lastAttemptTime"],
            "deliveredTime": None,
            "lastError": "HTTP 400: the receiver refused the event",
        }
    ]
    assert h.events[-1]["reason"] == "CallbackFailed"


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://127.0.0.1:1/elsewhere")

    receiver.replies = [moved]
    h = await run(Harness(settings()), body(receiver.url))
    assert len(receiver.seen) == 1
    assert h.notes[-1]["state"] == "Failed"
    assert "redirect" in h.notes[-1]["lastError"]


async def test_down_past_the_window_fails_with_the_last_error() -> None:
    url = "http://127.0.0.1:1/hook"  # nothing listens
    obj = body(url)
    obj["status"]["completionTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    h = await run(Harness(settings(notify_window_seconds=0.3)), obj)
    final = h.notes[-1]
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
        h = await run(Harness(settings(callback_policy=policy)), body(url))
        assert h.notes[-1]["state"] == "Failed", url
        assert why in h.notes[-1]["lastError"], (url, h.notes[-1])
        assert h.notes[-1]["lastStatusCode"] is None


async def test_no_secret_means_no_unsigned_callback_until_one_is_mounted(
    receiver: Receiver, aws: None, tmp_path: Any
) -> None:
    """Without a secret nothing is sent and the attempt is retried (it used to end Failed at
    once: the soak lost the callbacks of exports finished while the operator that had no secret
    yet still led); the Secret mounted, the next attempt delivers, signed."""
    mounted = tmp_path / "notify"
    mounted.mkdir()
    h = Harness(settings(notify_secrets="", notify_secrets_file=str(mounted)))
    h.event("ADDED", body(receiver.url))
    await h.settle(until=lambda: len(h.notes) >= 2)
    assert receiver.seen == []
    assert {n["state"] for n in h.notes} == {"Pending"}
    assert "no signing secret" in h.notes[-1]["lastError"]
    (mounted / "secret-0").write_text(SECRET + "\n")
    await h.settle()
    assert h.notes[-1]["state"] == "Delivered"
    assert len(receiver.seen) == 1
    headers, raw = receiver.seen[0]
    assert headers["webhook-signature"] == signature(
        keys=(parse_secret(SECRET),),
        msg_id=headers["webhook-id"],
        timestamp=int(headers["webhook-timestamp"]),
        body=raw,
    )


async def test_no_secret_past_the_window_fails_saying_so(receiver: Receiver) -> None:
    h = await run(
        Harness(settings(notify_secrets="", notify_window_seconds=0.2)), body(receiver.url)
    )
    assert receiver.seen == []
    assert h.notes[-1]["state"] == "Failed"
    assert "no signing secret" in h.notes[-1]["lastError"]


async def test_final_states_and_unfinished_phases_queue_nothing() -> None:
    h = Harness(settings())
    h.event("ADDED", body("https://a.example/h", phase="Running"))
    h.event("ADDED", body("https://a.example/h", uid="u-2", note={"state": "Delivered"}))
    obj = body("https://a.example/h", uid="u-3")
    del obj["spec"]["notify"]
    h.event("ADDED", obj)
    assert len(h.notifier.queue) == 1, "only the Delivered one passes the cheap filter"
    await h.settle(until=lambda: not len(h.notifier.queue))
    assert h.notes == [], "and its reconcile does nothing"


async def test_a_resumed_delivery_keeps_its_attempt_count(receiver: Receiver) -> None:
    last = _stamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    note = {"state": "Pending", "attempts": 3, "lastAttemptTime": last}
    h = await run(Harness(settings()), body(receiver.url, note=note))
    assert len(receiver.seen) == 1
    assert h.notes[-1]["attempts"] == 4 and h.notes[-1]["state"] == "Delivered"


async def test_a_resumed_delivery_waits_for_its_backoff(receiver: Receiver) -> None:
    # After a restart the next attempt is due at lastAttemptTime + the backoff (no jitter).
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    note = {"state": "Pending", "attempts": 2, "lastAttemptTime": _stamp(now)}
    h = Harness(settings(notify_backoff_base_seconds=10, notify_backoff_max_seconds=60))
    h.notifier.clock = lambda: now + dt.timedelta(seconds=5)
    h.event("ADDED", body(receiver.url, note=note, completed=now))
    result = await h.notifier.reconcile(("ns", "x"))
    assert result.requeue_after == 15.0, "10 s · 2^1 after the last attempt, 5 s gone"
    assert receiver.seen == []


async def test_a_failing_status_write_is_retried_without_a_second_post(
    receiver: Receiver,
) -> None:
    h = Harness(settings(retry_base_seconds=0.01, retry_max_seconds=0.02))
    h.kube.fail("patch", KubeError(503, "unavailable"))
    await run(h, body(receiver.url))
    assert h.notes[-1]["state"] == "Delivered"
    assert len(receiver.seen) == 1
    assert h.events[-1]["reason"] == "CallbackDelivered"


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


def test_the_backoff_doubles_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    backoff = Backoff(base=2.0, cap=60.0, jitter=0.2)
    for attempts in range(1, 12):
        nominal = min(60.0, 2.0 * 2 ** (attempts - 1))
        delay = backoff.delay(attempts, rand=rng.random)
        assert nominal <= delay <= nominal * 1.2


def test_event_ids_are_per_export_and_outcome() -> None:
    ok = build_event(body("https://a/h"), source_prefix="/s", download_url=None)
    failed = build_event(body("https://a/h", phase="Failed"), source_prefix="/s", download_url=None)
    other = build_event(body("https://a/h", uid="u-2"), source_prefix="/s", download_url=None)
    assert len({ok["id"], failed["id"], other["id"]}) == 3
    assert failed["type"] == "dev.exportjobs.export.failed"


async def test_a_late_event_from_before_the_final_state_starts_nothing(
    receiver: Receiver,
) -> None:
    h = Harness(settings())
    obj = body(receiver.url)
    await run(h, obj)
    assert h.notes[-1]["state"] == "Delivered"
    h.event("MODIFIED", obj)  # written before Delivered, seen after
    await h.settle(until=lambda: not len(h.notifier.queue))
    assert len(receiver.seen) == 1 and len(h.notes) == 1


async def test_deleting_the_exportjob_ends_its_delivery(receiver: Receiver) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    receiver.replies = [unavailable]
    h = Harness(settings(notify_backoff_base_seconds=0.2, notify_backoff_max_seconds=0.2))
    obj = body(receiver.url)
    h.event("ADDED", obj)
    await h.settle(until=lambda: bool(h.notes))
    assert h.notes[-1]["state"] == "Pending"
    h.event("DELETED", obj)
    await asyncio.sleep(0.5)  # past the 0.2 s backoff: a timer left would have queued it
    assert len(h.notifier.queue) == 0 and len(receiver.seen) == 1


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
    await run(Harness(settings()), body(receiver.url))
    after = (
        sample("exportjobs_operator_notification_attempts_total", result="5xx"),
        sample("exportjobs_operator_notification_attempts_total", result="2xx"),
        sample("exportjobs_operator_notifications_total", outcome="delivered"),
        sample("exportjobs_operator_notification_attempt_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 2]
