"""The controller's reconcile against in-memory caches and a recording writer (no cluster):
refused Job creates never show a Job and are retried, bad input stays with its export, watch lag
and TTL-deleted Jobs never fail an export."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from export_operator.controller.apicalls import ApiError
from export_operator.controller.reconciler import Controller, JobCreateError
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.workqueue import Result, run_worker
from export_operator.informer import Informer
from tests.unit.operator.factories import (
    condition,
    export_body,
    job,
    job_body,
    pod,
    pod_body,
    terminated,
)

NOW = dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC)
Key = tuple[str, str]


class FakeWriter:
    """Records writes; `create_errors` are raised by the next Job creates, in order."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deleted_jobs: list[str] = []
        self.create_errors: list[ApiError] = []
        self.patch_errors: list[ApiError] = []
        self.existing: set[str] = set()
        """Jobs that exist although the (fake) watch does not show them."""

    async def job_exists(self, *, namespace: str, name: str) -> bool:
        return name in self.existing or any(j["metadata"]["name"] == name for j in self.jobs)

    async def create_job(self, job: dict[str, Any]) -> bool:
        if self.create_errors:
            raise self.create_errors.pop(0)
        self.jobs.append(job)
        return True

    async def patch_status(
        self, *, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> None:
        if self.patch_errors:
            raise self.patch_errors.pop(0)
        self.patches.append((name, status))

    async def delete_job(self, *, namespace: str, name: str) -> None:
        self.deleted_jobs.append(name)

    async def delete_export(self, *, namespace: str, name: str, uid: str) -> None:
        pass

    async def post_event(self, **_: Any) -> None:
        pass


class Harness:
    def __init__(self, **settings: Any) -> None:
        settings.setdefault("default_destination_uri", "s3://out/reports/")
        settings.setdefault("max_running", 0)
        self.controller = Controller(settings=OperatorSettings(**settings), clock=lambda: NOW)
        self.writer = FakeWriter()
        self.controller.writer = self.writer  # type: ignore[assignment]
        self.controller.creations_quiet = 0.0  # see test_status_writes_wait_for_a_burst...

    @staticmethod
    def event(informer: Informer[Any], type_: str, body: dict[str, Any]) -> None:
        """A watch event, through the controller's informer (its cache and listeners)."""
        informer.handle_event({"type": type_, "object": body})

    def add(self, name: str, **kwargs: Any) -> Key:
        self.event(self.controller.exports, "ADDED", export_body(name, **kwargs))
        return ("ns", name)

    def status(self, name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for patched, status in self.writer.patches:
            if patched == name:
                merged.update(status)
        return {k: v for k, v in merged.items() if v is not None}

    def events(self) -> list[tuple[str, str]]:
        out = []
        while not self.controller._events.empty():
            event = self.controller._events.get_nowait()
            out.append((event["type_"], event["reason"]))
        return out

    async def admit_and_reconcile(self, *keys: Key) -> dict[Key, BaseException | Result]:
        self.controller.admit_once()
        out: dict[Key, BaseException | Result] = {}
        for key in keys:
            try:
                out[key] = await self.controller.reconcile(key)
            except Exception as exc:
                out[key] = exc
        return out


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ApiError(403, 'jobs "export-a" is forbidden: exceeded quota: q, requested: ...'),
            "QuotaExceeded",
        ),
        (ApiError(403, "jobs is forbidden: User cannot create"), "Forbidden"),
        (ApiError(503, "the server is currently unable to handle the request"), "APIUnavailable"),
        (ApiError(0, "Cannot connect to host"), "APIUnavailable"),
        (ApiError(429, "too many requests"), "APIUnavailable"),
    ],
)
async def test_a_refused_create_shows_no_job_says_why_and_is_retried(
    error: ApiError, reason: str
) -> None:
    h = Harness()
    key = h.add("a")
    h.writer.create_errors = [error]
    [outcome] = (await h.admit_and_reconcile(key)).values()
    assert isinstance(outcome, JobCreateError)
    status = h.status("a")
    assert "jobName" not in status, "no Job is shown before it exists"
    assert status["phase"] == "Queued"
    queued = next(c for c in status["conditions"] if c["type"] == "Queued")
    assert (queued["status"], queued["reason"]) == ("True", reason)
    assert error.message in queued["message"]
    assert h.events() == [("Warning", reason)]
    # The retry (the queue calls reconcile again after its backoff) succeeds.
    assert await h.controller.reconcile(key) == Result()
    status = h.status("a")
    assert status["phase"] == "Pending"
    assert status["jobName"] == "export-a"
    assert len(h.writer.jobs) == 1
    # The watch has not shown the Job yet: still Pending, nothing "disappeared".
    h.event(h.controller.exports, "MODIFIED", export_body("a", status=status))
    assert await h.controller.reconcile(key) == Result()
    assert h.status("a")["phase"] == "Pending"


async def test_a_retry_with_the_same_refusal_writes_and_posts_nothing_new() -> None:
    h = Harness()
    key = h.add("a")
    quota = ApiError(403, "exceeded quota: q")
    h.writer.create_errors = [quota, quota]
    await h.admit_and_reconcile(key)
    patches, _ = len(h.writer.patches), h.events()
    with pytest.raises(JobCreateError):
        await h.controller.reconcile(key)
    assert len(h.writer.patches) == patches
    assert h.events() == []


async def test_admitted_exports_hold_their_slots_while_their_creates_fail() -> None:
    h = Harness(max_running=2)
    keys = [h.add(f"e{i}", created=f"2026-01-01T00:00:0{i}Z") for i in range(4)]  # e0, e1 admitted
    h.writer.create_errors = [ApiError(403, "exceeded quota: q")] * 2
    outcomes = await h.admit_and_reconcile(*keys)
    assert all(isinstance(outcomes[k], JobCreateError) for k in keys[:2])
    assert h.controller.positions == {keys[2]: 1, keys[3]: 2}
    assert h.writer.jobs == []
    # Another pass does not admit the next ones in their place.
    await h.admit_and_reconcile()
    assert h.controller.admitted == set(keys[:2])


async def test_a_broken_dataset_template_fails_only_the_exports_that_use_it() -> None:
    h = Harness(dataset_uri_template="s3://datasets/{dataset_id}/{region}.csv")
    bad = h.add("bad", spec={"datasetId": "5f0c6a59-3f5e-4a55-9d59-8e7f2a4c2b11", "format": "csv"})
    good = h.add("good")
    outcomes = await h.admit_and_reconcile(bad, good)
    assert outcomes == {bad: Result(), good: Result()}
    status = h.status("bad")
    assert status["phase"] == "Failed"
    assert status["error"]["code"] == "INVALID_SPEC"
    assert "KeyError" in status["error"]["message"]
    assert "region" in status["error"]["message"]
    assert [j["metadata"]["name"] for j in h.writer.jobs] == ["export-good"]
    assert h.status("good")["phase"] == "Pending"


async def test_an_unparsable_quantity_fails_only_the_exports_that_need_it() -> None:
    # memory_per_gib is only used when the source size is known (an annotation).
    h = Harness(memory_per_gib="lots")
    sized = h.add("sized", annotations={"exportjobs.dev/source-size-bytes": str(5 * 2**30)})
    plain = h.add("plain")
    outcomes = await h.admit_and_reconcile(sized, plain)
    assert outcomes == {sized: Result(), plain: Result()}
    assert h.status("sized")["error"]["code"] == "INVALID_SPEC"
    assert "lots" in h.status("sized")["error"]["message"]
    assert h.status("plain")["phase"] == "Pending"


async def test_a_job_the_api_server_refuses_as_invalid_fails_its_export_once() -> None:
    h = Harness()
    key = h.add("a")
    h.writer.create_errors = [ApiError(422, "Job.batch is invalid: spec.template...")]
    assert (await h.admit_and_reconcile(key))[key] == Result()
    assert h.status("a")["error"]["code"] == "INVALID_SPEC"
    assert h.events() == [("Warning", "Failed")]
    h.controller.admit_once()
    assert key not in h.controller.admitted, "a Failed export is not admitted again"


async def test_a_nul_byte_in_the_csv_options_is_an_invalid_spec() -> None:
    h = Harness()
    key = h.add(
        "a", spec={"source": {"uri": "s3://b/k.csv"}, "format": "csv", "csv": {"delimiter": "\0"}}
    )
    assert (await h.admit_and_reconcile(key))[key] == Result()
    assert h.status("a")["error"]["code"] == "INVALID_SPEC"
    assert h.writer.jobs == []


async def test_a_finished_job_deleted_before_the_status_recorded_it_still_succeeds() -> None:
    h = Harness()
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a"})
    done = job("a", succeeded=1, conditions=[condition("Complete")])
    body = {
        "metadata": {
            "name": "export-a",
            "namespace": "ns",
            "labels": {"exportjobs.dev/export": "a"},
        },
        "status": {"succeeded": 1, "conditions": [condition("Complete")]},
    }
    assert done.complete
    h.event(h.controller.jobs, "DELETED", body)  # TTL: gone from the cache
    assert await h.controller.reconcile(key) == Result()
    assert h.status("a")["phase"] == "Succeeded"
    assert key not in h.controller.tombstones


async def test_a_pod_that_cannot_start_is_failed_by_the_watchdog_and_frees_its_slot() -> None:
    h = Harness(start_timeout_seconds=60, max_running=1)
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a"})
    waiting = h.add("b", created="2026-01-01T00:00:09Z")
    h.event(h.controller.jobs, "ADDED", job_body("a", active=1))
    stuck = pod_body(
        export_name="a",
        state={"waiting": {"reason": "CreateContainerError", "message": "invalid env"}},
        scheduled={
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": "2026-01-01T00:18:30Z",
        },
    )
    h.event(h.controller.pods, "ADDED", stuck)
    h.controller.admit_once()
    assert waiting in h.controller.positions, "the stuck one holds the only slot"
    result = await h.controller.reconcile(key)  # 90 s after scheduling: over the limit
    assert result == Result()
    status = h.status("a")
    assert status["phase"] == "Failed"
    assert status["error"]["code"] == "POD_START_FAILED"
    assert h.writer.deleted_jobs == ["export-a"]
    # Until then, a stuck pod is looked at again after the housekeeping interval.
    h2 = Harness(start_timeout_seconds=600)
    k2 = h2.add("a", status={"phase": "Pending", "jobName": "export-a"})
    h2.event(h2.controller.jobs, "ADDED", job_body("a", active=1))
    h2.event(h2.controller.pods, "ADDED", stuck)
    assert (await h2.controller.reconcile(k2)).requeue_after == 10.0


async def test_status_write_failure_is_retried_by_the_queue_with_backoff() -> None:
    h = Harness(retry_base_seconds=0.01, retry_max_seconds=0.02)
    h.add("a")
    h.writer.patch_errors = [ApiError(503, "unavailable")] * 3
    h.controller.leading.set()
    worker = asyncio.create_task(run_worker(h.controller.queue, h.controller.reconcile))
    h.controller.admit_once()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if h.status("a").get("jobName"):
            break
    h.controller.queue.shut_down()
    await worker
    assert h.status("a")["jobName"] == "export-a"
    assert len(h.writer.jobs) == 1, "the Job was created once; only the status was retried"


async def test_a_deleted_exportjob_has_its_job_deleted_and_is_forgotten() -> None:
    h = Harness()
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a"})
    h.event(h.controller.jobs, "ADDED", job_body("a", active=1))
    h.event(h.controller.exports, "DELETED", export_body("a"))
    assert await h.controller.reconcile(key) == Result()
    assert h.writer.deleted_jobs == ["export-a"]
    assert h.controller.queue.failures(key) == 0


async def test_a_job_the_watch_does_not_show_yet_is_asked_for_before_failing() -> None:
    h = Harness()
    key = h.add("lag", status={"phase": "Pending", "jobName": "export-lag"})
    h.writer.existing.add("export-lag")  # e.g. the Job watch re-lists after an outage
    assert await h.controller.reconcile(key) == Result()
    written = h.status("lag")
    assert "error" not in written, "not Failed"
    assert written.get("phase", "Pending") == "Pending"
    gone = h.add("gone", status={"phase": "Running", "jobName": "export-gone"})
    assert await h.controller.reconcile(gone) == Result()
    assert h.status("gone")["error"]["code"] == "INTERNAL"


def test_pod_views_factory_smoke() -> None:
    assert pod(state=terminated(0)).exit_code == 0


async def test_starting_to_lead_requeues_everything_and_replays_to_listeners() -> None:
    h = Harness()
    keys = [h.add("a"), h.add("b", status={"phase": "Succeeded"})]
    seen: list[str] = []
    h.controller.on_leading.append(
        lambda: seen.extend(b["metadata"]["name"] for b in h.controller.export_bodies())
    )
    h.controller._start_leading()
    assert sorted(seen) == ["a", "b"]
    assert len(h.controller.queue) == len(keys)
    [body] = [b for b in h.controller.export_bodies() if b["metadata"]["name"] == "b"]
    assert body["status"]["phase"] == "Succeeded"
    assert body["metadata"]["uid"] == "uid-b"


async def test_an_invalid_spec_fails_at_once_even_while_it_would_wait_for_a_slot() -> None:
    h = Harness(max_running=1)
    first = h.add("first", created="2026-01-01T00:00:00Z")
    bad = h.add(
        "bad",
        created="2026-01-01T00:00:05Z",
        spec={"source": {"uri": "s3://b/k.csv"}, "format": "csv", "csv": {"quote": "\0"}},
    )
    outcomes = await h.admit_and_reconcile(first, bad)
    assert outcomes == {first: Result(), bad: Result()}
    assert h.status("bad")["error"]["code"] == "INVALID_SPEC"
    assert h.status("first")["phase"] == "Pending"


async def test_the_queue_position_is_written_once_on_entering_the_queue() -> None:
    """A backlog costs no patch per queued export per admission: the place in line is written
    when the export is queued (FIFO: it only moves up), then Pending and the outcome."""
    h = Harness(max_running=1)
    keys = [h.add(f"e{i}", created=f"2026-01-01T00:00:0{i}Z") for i in range(4)]
    await h.admit_and_reconcile(*keys)
    assert [h.status(k[1]).get("queuePosition") for k in keys] == [None, 1, 2, 3]
    assert [h.status(k[1])["phase"] for k in keys] == ["Pending", "Queued", "Queued", "Queued"]
    for key in keys:  # the watch shows what was written
        h.event(
            h.controller.exports,
            "MODIFIED",
            export_body(key[1], created=f"2026-01-01T00:00:0{key[1][1]}Z", status=h.status(key[1])),
        )
    # e0 finishes: e1 is admitted, e2 and e3 move up in the queue (2 → 1, 3 → 2).
    h.event(
        h.controller.jobs, "ADDED", job_body("e0", succeeded=1, conditions=[condition("Complete")])
    )
    patches = len(h.writer.patches)
    await h.admit_and_reconcile(*keys)
    assert h.controller.positions == {keys[2]: 1, keys[3]: 2}
    written = [name for name, _ in h.writer.patches[patches:]]
    assert sorted(written) == ["e0", "e1"], "e0 Succeeded, e1 Pending; nothing for e2 and e3"
    assert h.status("e2")["queuePosition"] == 2, "the place when it was queued: an upper bound"


async def test_status_writes_wait_for_a_burst_of_job_creates_then_go() -> None:
    """Job creations first: the status write right after a create waits until no Job has
    been created for `creations_quiet`, then goes without any event asking for it."""
    h = Harness()
    h.controller.creations_quiet = 0.2
    a, b = h.add("a"), h.add("b")
    assert await h.controller.reconcile(a) == Result(requeue_after=15.0)
    assert await h.controller.reconcile(b) == Result(requeue_after=15.0)
    assert [j["metadata"]["name"] for j in h.writer.jobs] == ["export-a", "export-b"]
    assert h.writer.patches == [], "no status write while Jobs are being created"
    while len(h.controller.queue):  # the keys the informer events queued
        h.controller.queue.done(await h.controller.queue.get())
    await asyncio.sleep(0.5)
    assert len(h.controller.queue) == 2, "both queued again once the creates were over"
    for key in (a, b):
        assert await h.controller.reconcile(key) == Result()
    assert [h.status(n)["jobName"] for n in ("a", "b")] == ["export-a", "export-b"]
