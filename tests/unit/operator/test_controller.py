"""The controller's reconcile against in-memory caches and the in-memory API (no cluster):
refused Job creates never show a Job and are retried, bad input stays with its export, watch lag
and TTL-deleted Jobs never fail an export."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.manager import Manager
from export_operator.controller.outcomes import JobCreateError
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.workqueue import Result, run_worker
from export_operator.informer import Informer
from export_operator.kube import KubeError
from tests.support.factories import (
    condition,
    export_body,
    job,
    job_body,
    pod,
    pod_body,
    terminated,
)
from tests.support.fake_kube import FakeKube

NOW = dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC)
Key = tuple[str, str]
EXPORTS = "/apis/exportjobs.dev/v1alpha1/namespaces/ns/exportjobs"
DONE = Result()
"""A finished export (retention off in the harness): nothing more to do."""
LOOK_AGAIN = Result(requeue_after=60.0)
"""An unfinished export: looked at again after the resync interval even without an event."""


class Harness:
    """A manager writing to the in-memory API; watch events go through its informers."""

    def __init__(
        self, *, quiet: float = 0.0, unchecked: dict[str, Any] | None = None, **settings: Any
    ) -> None:
        settings.setdefault("default_destination_uri", "s3://out/reports/")
        settings.setdefault("max_running", 0)
        settings.setdefault("retention_seconds", 0)
        # quiet=0: a status write right after a create goes at once (see
        # test_status_writes_wait_for_a_burst_of_job_creates_then_go).
        built = OperatorSettings.from_env({}, **settings)
        for name, value in (unchecked or {}).items():  # refused by from_env: the controller copes
            groups = [g for g, kind in built.groups().items() if name in kind.model_fields]
            if not groups:
                built = built.model_copy(update={name: value})
            else:
                group = getattr(built, groups[0]).model_copy(update={name: value})
                built = built.model_copy(update={groups[0]: group})
        self.manager = Manager(settings=built, clock=lambda: NOW, creations_quiet=quiet)
        self.kube = FakeKube()
        self.manager.connect(KubeWriter(self.kube))
        self.caches = self.manager.caches
        self.reconcile = self.manager.reconciler.reconcile
        self.admission = self.manager.admission
        self._events_seen = 0

    @staticmethod
    def event(informer: Informer[Any], type_: str, body: dict[str, Any]) -> None:
        """A watch event, through the manager's informer (its cache and handlers)."""
        informer.handle_event({"type": type_, "object": body})

    def add(self, name: str, **kwargs: Any) -> Key:
        """An ExportJob in the API server and through the watch."""
        body = export_body(name, **kwargs)
        self.kube.objects[f"{EXPORTS}/{name}"] = body
        self.event(self.caches.exports, "ADDED", body)
        return ("ns", name)

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """The Jobs in the API server, in the order they were created."""
        return [obj for path, obj in self.kube.objects.items() if "/jobs/" in path]

    @property
    def patches(self) -> list[tuple[str, dict[str, Any]]]:
        """(ExportJob name, status) of every status patch sent."""
        return [
            (path.split("/")[-2], body["status"])
            for path, body in zip(
                self.kube.paths("patch", "/status"),
                self.kube.bodies("patch", "/status"),
                strict=True,
            )
        ]

    def deleted(self, kind: str) -> list[str]:
        """Names of the objects of `kind` (jobs, exportjobs) a delete was sent for."""
        return [p.rsplit("/", 1)[1] for p in self.kube.paths("delete", f"/{kind}/")]

    def status(self, name: str) -> dict[str, Any]:
        """The status after every patch sent (None deleting a field)."""
        merged: dict[str, Any] = {}
        for patched, status in self.patches:
            if patched == name:
                merged.update(status)
        return {k: v for k, v in merged.items() if v is not None}

    async def events(self) -> list[tuple[str, str]]:
        """The Events posted since the last call."""
        await self.manager.recorder.drain()
        posted = self.kube.bodies("create", "/events")
        out = [(e["type"], e["reason"]) for e in posted[self._events_seen :]]
        self._events_seen = len(posted)
        return out

    async def admit_and_reconcile(self, *keys: Key) -> dict[Key, BaseException | Result]:
        self.admission.admit_once()
        out: dict[Key, BaseException | Result] = {}
        for key in keys:
            try:
                out[key] = await self.reconcile(key)
            except Exception as exc:
                out[key] = exc
        return out


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            KubeError(403, 'jobs "export-a" is forbidden: exceeded quota: q, requested: ...'),
            "QuotaExceeded",
        ),
        (KubeError(403, "jobs is forbidden: User cannot create"), "Forbidden"),
        (KubeError(503, "the server is currently unable to handle the request"), "APIUnavailable"),
        (KubeError(0, "Cannot connect to host"), "APIUnavailable"),
        (KubeError(429, "too many requests"), "APIUnavailable"),
    ],
)
async def test_a_refused_create_shows_no_job_says_why_and_is_retried(
    error: KubeError, reason: str
) -> None:
    h = Harness()
    key = h.add("a")
    h.kube.fail("create", error, on="/jobs")
    [outcome] = (await h.admit_and_reconcile(key)).values()
    assert isinstance(outcome, JobCreateError)
    status = h.status("a")
    assert "jobName" not in status, "no Job is shown before it exists"
    assert status["phase"] == "Queued"
    queued = next(c for c in status["conditions"] if c["type"] == "Queued")
    assert (queued["status"], queued["reason"]) == ("True", reason)
    assert error.message in queued["message"]
    assert await h.events() == [("Warning", reason)]
    # The retry (the queue calls reconcile again after its backoff) succeeds.
    assert await h.reconcile(key) == LOOK_AGAIN
    status = h.status("a")
    assert status["phase"] == "Pending"
    assert status["jobName"] == "export-a"
    assert len(h.jobs) == 1
    # The watch has not shown the Job yet: still Pending, nothing "disappeared".
    h.event(h.caches.exports, "MODIFIED", export_body("a", status=status))
    assert await h.reconcile(key) == LOOK_AGAIN
    assert h.status("a")["phase"] == "Pending"


async def test_a_retry_with_the_same_refusal_writes_and_posts_nothing_new() -> None:
    h = Harness()
    key = h.add("a")
    quota = KubeError(403, "exceeded quota: q")
    h.kube.fail("create", quota, quota, on="/jobs")
    await h.admit_and_reconcile(key)
    patches, _ = len(h.patches), await h.events()
    with pytest.raises(JobCreateError):
        await h.reconcile(key)
    assert len(h.patches) == patches
    assert await h.events() == []


async def test_admitted_exports_hold_their_slots_while_their_creates_fail() -> None:
    h = Harness(max_running=2)
    keys = [h.add(f"e{i}", created=f"2026-01-01T00:00:0{i}Z") for i in range(4)]  # e0, e1 admitted
    h.kube.fail("create", *[KubeError(403, "exceeded quota: q")] * 2, on="/jobs")
    outcomes = await h.admit_and_reconcile(*keys)
    assert all(isinstance(outcomes[k], JobCreateError) for k in keys[:2])
    assert h.admission.positions == {keys[2]: 1, keys[3]: 2}
    assert h.jobs == []
    # Another pass does not admit the next ones in their place.
    await h.admit_and_reconcile()
    assert [h.admission.holds_slot(k) for k in keys] == [True, True, False, False]


async def test_a_broken_dataset_template_fails_only_the_exports_that_use_it() -> None:
    h = Harness(unchecked={"dataset_uri_template": "s3://datasets/{dataset_id}/{region}.csv"})
    bad = h.add("bad", spec={"datasetId": "5f0c6a59-3f5e-4a55-9d59-8e7f2a4c2b11", "format": "csv"})
    good = h.add("good")
    outcomes = await h.admit_and_reconcile(bad, good)
    assert outcomes == {bad: DONE, good: LOOK_AGAIN}
    status = h.status("bad")
    assert status["phase"] == "Failed"
    assert status["error"]["code"] == "INVALID_SPEC"
    assert "KeyError" in status["error"]["message"]
    assert "region" in status["error"]["message"]
    assert [j["metadata"]["name"] for j in h.jobs] == ["export-good"]
    assert h.status("good")["phase"] == "Pending"


async def test_an_unparsable_quantity_fails_only_the_exports_that_need_it() -> None:
    # memory_per_gib is only used when the source size is known (an annotation).
    h = Harness(unchecked={"memory_per_gib": "lots"})
    sized = h.add("sized", annotations={"exportjobs.dev/source-size-bytes": str(5 * 2**30)})
    plain = h.add("plain")
    outcomes = await h.admit_and_reconcile(sized, plain)
    assert outcomes == {sized: DONE, plain: LOOK_AGAIN}
    assert h.status("sized")["error"]["code"] == "INVALID_SPEC"
    assert "lots" in h.status("sized")["error"]["message"]
    assert h.status("plain")["phase"] == "Pending"


async def test_a_job_the_api_server_refuses_as_invalid_fails_its_export_once() -> None:
    h = Harness()
    key = h.add("a")
    h.kube.fail("create", KubeError(422, "Job.batch is invalid: spec.template..."), on="/jobs")
    assert (await h.admit_and_reconcile(key))[key] == DONE
    assert h.status("a")["error"]["code"] == "INVALID_SPEC"
    assert await h.events() == [("Warning", "Failed")]
    h.admission.admit_once()
    assert not h.admission.holds_slot(key), "a Failed export is not admitted again"


async def test_a_nul_byte_in_the_csv_options_is_an_invalid_spec() -> None:
    h = Harness()
    key = h.add(
        "a", spec={"source": {"uri": "s3://b/k.csv"}, "format": "csv", "csv": {"delimiter": "\0"}}
    )
    assert (await h.admit_and_reconcile(key))[key] == DONE
    assert h.status("a")["error"]["code"] == "INVALID_SPEC"
    assert h.jobs == []


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
    h.event(h.caches.jobs, "DELETED", body)  # TTL: gone from the cache
    assert await h.reconcile(key) == DONE
    assert h.status("a")["phase"] == "Succeeded"
    assert await h.reconcile(key) == DONE and len(h.patches) == 1, "recorded once"


async def test_a_pod_that_cannot_start_is_failed_by_the_watchdog_and_frees_its_slot() -> None:
    h = Harness(start_timeout_seconds=60, max_running=1)
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a"})
    waiting = h.add("b", created="2026-01-01T00:00:09Z")
    h.event(h.caches.jobs, "ADDED", job_body("a", active=1))
    stuck = pod_body(
        export_name="a",
        state={"waiting": {"reason": "CreateContainerError", "message": "invalid env"}},
        scheduled={
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": "2026-01-01T00:18:30Z",
        },
    )
    h.event(h.caches.pods, "ADDED", stuck)
    h.admission.admit_once()
    assert waiting in h.admission.positions, "the stuck one holds the only slot"
    result = await h.reconcile(key)  # 90 s after scheduling: over the limit
    assert result == DONE
    status = h.status("a")
    assert status["phase"] == "Failed"
    assert status["error"]["code"] == "POD_START_FAILED"
    assert h.deleted("jobs") == ["export-a"]
    # Until then, a stuck pod is looked at again at the watchdog's deadline.
    h2 = Harness(start_timeout_seconds=600, resync_interval_seconds=3600)
    k2 = h2.add("a", status={"phase": "Pending", "jobName": "export-a"})
    h2.event(h2.caches.jobs, "ADDED", job_body("a", active=1))
    h2.event(h2.caches.pods, "ADDED", stuck)
    # Scheduled at 00:18:30, + 600 s, now 00:20 (+ 1 s: past the limit, not at it).
    assert (await h2.reconcile(k2)).requeue_after == 511.0


async def test_status_write_failure_is_retried_by_the_queue_with_backoff() -> None:
    h = Harness(retry_base_seconds=0.01, retry_max_seconds=0.02)
    h.add("a")
    h.kube.fail("patch", *[KubeError(503, "unavailable")] * 3, on="/status")
    h.manager.leading.set()
    worker = asyncio.create_task(run_worker(h.manager.queue, h.reconcile))
    h.admission.admit_once()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if h.status("a").get("jobName"):
            break
    h.manager.queue.shut_down()
    await worker
    assert h.status("a")["jobName"] == "export-a"
    assert len(h.jobs) == 1, "the Job was created once; only the status was retried"


async def test_a_deleted_exportjob_has_its_job_deleted_and_is_forgotten() -> None:
    h = Harness()
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a"})
    h.event(h.caches.jobs, "ADDED", job_body("a", active=1))
    h.event(h.caches.exports, "DELETED", export_body("a"))
    assert await h.reconcile(key) == DONE
    assert h.deleted("jobs") == ["export-a"]
    assert h.manager.queue.failures(key) == 0


async def test_a_job_the_watch_does_not_show_yet_is_asked_for_before_failing() -> None:
    h = Harness()
    key = h.add("lag", status={"phase": "Pending", "jobName": "export-lag"})
    h.kube.objects["/apis/batch/v1/namespaces/ns/jobs/export-lag"] = job_body(
        "lag"
    )  # e.g. the Job watch re-lists after an outage
    assert await h.reconcile(key) == LOOK_AGAIN
    written = h.status("lag")
    assert "error" not in written, "not Failed"
    assert written.get("phase", "Pending") == "Pending"
    gone = h.add("gone", status={"phase": "Running", "jobName": "export-gone"})
    assert await h.reconcile(gone) == DONE
    assert h.status("gone")["error"]["code"] == "INTERNAL"


def test_pod_views_factory_smoke() -> None:
    assert pod(state=terminated(0)).exit_code == 0


async def test_starting_to_lead_requeues_everything_for_both_reconcilers() -> None:
    h = Harness()
    notify = {"source": {"uri": "s3://s/a.csv"}, "format": "csv", "notify": {"url": "https://h"}}
    keys = [h.add("a"), h.add("b", status={"phase": "Succeeded"}, spec=notify)]
    for queue in (h.manager.queue, h.manager.notifier.queue):  # drain what the events queued
        while len(queue):
            queue.done(await queue.get())
    h.manager.start_leading()
    assert len(h.manager.queue) == len(keys)
    assert len(h.manager.notifier.queue) == 1, "the finished one with a callback"


async def test_an_invalid_spec_fails_at_once_even_while_it_would_wait_for_a_slot() -> None:
    h = Harness(max_running=1)
    first = h.add("first", created="2026-01-01T00:00:00Z")
    bad = h.add(
        "bad",
        created="2026-01-01T00:00:05Z",
        spec={"source": {"uri": "s3://b/k.csv"}, "format": "csv", "csv": {"quote": "\0"}},
    )
    outcomes = await h.admit_and_reconcile(first, bad)
    assert outcomes == {first: LOOK_AGAIN, bad: DONE}
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
            h.caches.exports,
            "MODIFIED",
            export_body(key[1], created=f"2026-01-01T00:00:0{key[1][1]}Z", status=h.status(key[1])),
        )
    # e0 finishes: e1 is admitted, e2 and e3 move up in the queue (2 → 1, 3 → 2).
    h.event(h.caches.jobs, "ADDED", job_body("e0", succeeded=1, conditions=[condition("Complete")]))
    patches = len(h.patches)
    await h.admit_and_reconcile(*keys)
    assert h.admission.positions == {keys[2]: 1, keys[3]: 2}
    written = [name for name, _ in h.patches[patches:]]
    assert sorted(written) == ["e0", "e1"], "e0 Succeeded, e1 Pending; nothing for e2 and e3"
    assert h.status("e2")["queuePosition"] == 2, "the place when it was queued: an upper bound"


async def test_status_writes_wait_for_a_burst_of_job_creates_then_go() -> None:
    """Job creations first: the status write right after a create waits until no Job has
    been created for `creations_quiet`, then goes without any event asking for it."""
    h = Harness(quiet=0.2)
    a, b = h.add("a"), h.add("b")
    assert await h.reconcile(a) == Result(requeue_after=15.0)
    assert await h.reconcile(b) == Result(requeue_after=15.0)
    assert [j["metadata"]["name"] for j in h.jobs] == ["export-a", "export-b"]
    assert h.patches == [], "no status write while Jobs are being created"
    while len(h.manager.queue):  # the keys the informer events queued
        h.manager.queue.done(await h.manager.queue.get())
    await asyncio.sleep(0.5)
    assert len(h.manager.queue) == 2, "both queued again once the creates were over"
    for key in (a, b):
        assert await h.reconcile(key) == LOOK_AGAIN
    assert [h.status(n)["jobName"] for n in ("a", "b")] == ["export-a", "export-b"]


async def test_a_finished_export_is_looked_at_again_when_its_retention_ends() -> None:
    h = Harness(retention_seconds=3600)
    done = {"phase": "Succeeded", "completionTime": "2026-01-01T00:10:00Z"}
    key = h.add("a", status=done)
    # Completed at 00:10, now 00:20: 50 minutes left (+1 s: past it, not at it).
    assert await h.reconcile(key) == Result(requeue_after=3001.0)
    assert h.deleted("exportjobs") == []
    old = h.add("old", status={**done, "completionTime": "2025-12-31T23:00:00Z"})
    assert await h.reconcile(old) == DONE
    assert h.deleted("exportjobs") == ["old"]


async def test_a_deleted_export_drops_its_timers_and_backoff() -> None:
    h = Harness(retention_seconds=3600)
    key = h.add("a", status={"phase": "Succeeded", "completionTime": "2026-01-01T00:10:00Z"})
    h.manager.queue.add_rate_limited(key)
    assert h.manager.queue.failures(key) == 1
    h.event(h.caches.exports, "DELETED", export_body("a"))
    assert h.manager.queue.failures(key) == 0


async def test_held_writes_go_once_the_created_jobs_are_seen_without_an_admission_pass() -> None:
    """With a limit, a key stays admitted only until its Job is seen; a held write must not
    wait for the next admission pass (nothing may ask for one)."""
    h = Harness(quiet=0.2, max_running=5)
    key = h.add("a")
    h.admission.admit_once()
    assert await h.reconcile(key) == Result(requeue_after=15.0), "held: a Job was just created"
    h.event(h.caches.jobs, "ADDED", job_body("a", active=1))
    assert await h.reconcile(key) == Result(requeue_after=15.0), "still within the quiet time"
    while len(h.manager.queue):  # the keys the events queued
        h.manager.queue.done(await h.manager.queue.get())
    await asyncio.sleep(0.5)
    assert len(h.manager.queue) == 1, "queued again once the creations were over"
    assert await h.reconcile(key) == LOOK_AGAIN
    assert h.status("a")["phase"] == "Pending"


async def test_a_job_complete_before_its_pod_shows_the_result_is_written_once_with_it() -> None:
    """The Job's watch can show Complete before the pods' watch shows the processor's result:
    Succeeded waits for it (written without it, then again with it: a fourth status patch for
    some exports of the 10,000 backlog)."""
    h = Harness()
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a", "observedGeneration": 1})
    h.event(h.caches.pods, "ADDED", pod_body(export_name="a"))  # the pod as last seen: bound
    complete = job_body("a", succeeded=1, conditions=[condition("Complete")])
    complete["status"]["completionTime"] = "2026-01-01T00:19:55Z"  # 5 s before NOW
    h.event(h.caches.jobs, "MODIFIED", complete)
    assert await h.reconcile(key) == LOOK_AGAIN
    assert h.patches == [], "no Succeeded without the result"
    result = '{"uri": "s3://out/reports/a.csv", "bytes": 1, "rows": 1, "format": "csv"}'
    ended = pod_body(export_name="a", phase="Succeeded", state=terminated(0, result, "Completed"))
    h.event(h.caches.pods, "MODIFIED", ended)
    assert await h.reconcile(key) == DONE
    assert [s["phase"] for _, s in h.patches] == ["Succeeded"]
    assert h.status("a")["result"]["uri"] == "s3://out/reports/a.csv"


async def test_a_job_complete_whose_pod_end_never_shows_succeeds_without_the_result() -> None:
    h = Harness()
    key = h.add("a", status={"phase": "Pending", "jobName": "export-a", "observedGeneration": 1})
    h.event(h.caches.pods, "ADDED", pod_body(export_name="a"))
    complete = job_body("a", succeeded=1, conditions=[condition("Complete")])
    complete["status"]["completionTime"] = "2026-01-01T00:19:00Z"  # a minute ago: waited enough
    h.event(h.caches.jobs, "MODIFIED", complete)
    assert await h.reconcile(key) == DONE
    assert h.status("a")["phase"] == "Succeeded" and "result" not in h.status("a")
