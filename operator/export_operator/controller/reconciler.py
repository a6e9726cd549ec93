"""The reconciler: `reconcile(key) -> Result`, the only writer of an ExportJob's phase,
conditions and result.

Level-based: it reads the caches (the ExportJob, its Job, its pods), creates the Job of an
admitted ExportJob, derives the status (`status.decide`), writes what differs, deletes what must
go, and returns when to look again (`Result.requeue_after`: retention from `completionTime`, the
watchdog's deadline for a stuck pod, the resync interval). Any API failure raises, and the work
queue retries the key with backoff.

What it keeps in memory bridges watch lag only: the status last written (fresher than the watch),
the last snapshot of a finished Job the watch saw deleted (TTL) before the status recorded its
outcome, and which specs were checked before admission.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from export_operator.controller import metrics
from export_operator.controller.admission import Admission, waits_for_job
from export_operator.controller.apicalls import KubeWriter, status_patch
from export_operator.controller.caches import Caches
from export_operator.controller.jobs import JobFactory
from export_operator.controller.outcomes import (
    JobCreateError,
    Waiting,
    Watchdog,
    create_error_reason,
)
from export_operator.controller.recorder import CREATIONS_FIRST_MAX, EventRecorder
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView, JobView, parse_time
from export_operator.controller.split_status import SPLIT_RULES, is_split
from export_operator.controller.split_steps import SplitSteps
from export_operator.controller.status import Decision, decide
from export_operator.controller.workqueue import Result
from export_operator.informer import Key
from export_operator.kube import KubeError
from export_operator.resource import Phase

log = logging.getLogger(__name__)


class Reconciler:
    """One ExportJob at a time: its Job and its status in line with the cluster."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        caches: Caches,
        admission: Admission,
        recorder: EventRecorder,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.writer: KubeWriter | None = None
        """Where writes go (set when the manager has opened its API client)."""
        self._settings = settings
        self._caches = caches
        self._admission = admission
        self._recorder = recorder
        self._clock = clock
        self._jobs = JobFactory(settings)
        self._split = SplitSteps(jobs=self._jobs, caches=caches)
        self._watchdog = Watchdog(
            unschedulable_timeout=settings.pod.unschedulable_timeout_seconds,
            image_pull_timeout=settings.pod.image_pull_timeout_seconds,
            start_timeout=settings.pod.start_timeout_seconds,
        )
        self._written: dict[str, dict[str, Any]] = {}
        """ExportJob uid → the owned status fields last written (fresher than the watch)."""
        self._tombstones: dict[Key, JobView] = {}
        self._checked: set[str] = set()
        """Uids of ExportJobs whose spec gave a Job manifest (checked before admission)."""

    # -- what the event handlers and the manager tell ----------------------------------------------
    def job_deleted(self, key: Key, job: JobView) -> None:
        """The watch saw a finished Job deleted (TTL): keep its last snapshot until the
        ExportJob's status has recorded the outcome."""
        self._tombstones[key] = job

    def forget(self, export: ExportView) -> None:
        """The ExportJob is gone."""
        self._written.pop(export.uid, None)
        self._checked.discard(export.uid)
        self._tombstones.pop(export.key, None)
        self._split.forget(export)

    def reset(self) -> None:
        """Gaining the lead: another leader may have written meanwhile."""
        self._written.clear()

    def fresh(self, export: ExportView) -> ExportView:
        """The snapshot with the phase and Job name this process last wrote (the watch may not
        show them yet; cheap: no JSON)."""
        written = self._written.get(export.uid)
        if written is None:
            return export
        phase, job_name = str(written.get("phase") or ""), str(written.get("jobName") or "")
        return dataclasses.replace(export, phase_value=phase, job_name=job_name)

    def _current_status(self, export: ExportView) -> dict[str, Any]:
        written = self._written.get(export.uid)
        if written is None:
            return export.status
        seen = export.status
        if all(seen.get(k) == v for k, v in written.items()):
            del self._written[export.uid]  # the watch caught up
            return seen
        return {**seen, **written}

    # -- reconcile ---------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> Result:
        """Bring one ExportJob's Job and status in line with the cluster; raise to retry."""
        metrics.RECONCILES.labels("queue").inc()
        writer = self.writer
        assert writer is not None, "the manager sets the writer before workers start"
        export = self._caches.exports.get(key)
        job = self._caches.job_of(key)
        if export is None:
            if job is not None and not job.deleting:  # the ownerReference would do it, later
                await writer.delete_job(namespace=job.namespace, name=job.name)
            return Result()
        if export.deleting:
            return Result()
        job = job or self._tombstones.get(key)
        if job is not None:
            self._admission.seen(key)
        elif await self._job_lags(writer, export):
            self._admission.created(key)
        invalid, waiting = await self._create_or_check(export, job)
        current = self._current_status(export)
        steps, pods = self._split.steps_of(key), self._caches.pods.indexed(key)
        split = is_split(job, steps)
        decision = decide(
            rules=SPLIT_RULES if split else (),
            steps=steps,
            export=export,
            current=current,
            job=job,
            pods=pods,
            job_in_flight=self._admission.in_flight(key),
            queue_position=self._admission.positions.get(key),
            invalid_spec=invalid,
            waiting=waiting,
            now=self._clock(),
            watchdog=self._watchdog,
        )
        log.debug("reconcile %s: job %s, phase %s", key[1], job is not None, decision.phase.value)
        if decision.awaiting_admission:
            self._admission.kick()
            return Result(requeue_after=self._settings.api.resync_interval_seconds)
        later = (
            await self._split.advance(writer, export, job, steps, pods, decision) if split else None
        )
        result = await self._apply(export, job, current, decision)
        if later is not None and (result.requeue_after is None or later < result.requeue_after):
            return Result(requeue_after=later)
        return result

    async def _job_lags(self, writer: KubeWriter, export: ExportView) -> bool:
        """The status names a Job the watch does not show (yet): it lags, e.g. while it
        re-lists after an API outage. Asked directly: whether it exists."""
        fresh = self.fresh(export)
        return bool(
            fresh.job_name
            and not self._admission.in_flight(export.key)
            and fresh.phase in (Phase.PENDING, Phase.RUNNING)
            and await writer.job_exists(namespace=export.namespace, name=fresh.job_name)
        )

    async def _create_or_check(
        self, export: ExportView, job: JobView | None
    ) -> tuple[str | None, Waiting | None]:
        """Create the Job of an admitted ExportJob, or check the spec of one still waiting:
        (why the spec is invalid, why the create waits)."""
        fresh = self.fresh(export)
        if job is not None or self._admission.in_flight(export.key) or not waits_for_job(fresh):
            return None, None
        if self._admission.take_slot(export.key):
            return await self._create_job(export)
        if fresh.phase is Phase.QUEUED or export.uid in self._checked:
            return None, None
        # Not admitted yet: a spec that can never run fails now, not after its wait. (Checked
        # once: the spec is immutable.)
        built = await self._jobs.manifest(export, sized=False)
        if isinstance(built, str):
            return built, None
        self._checked.add(export.uid)
        return None, None

    async def _create_job(self, export: ExportView) -> tuple[str | None, Waiting | None]:
        assert self.writer is not None
        job = await self._jobs.manifest(export, sized=True, slots=self._admission.granted(export))
        if isinstance(job, str):
            return job, None
        self._recorder.job_created()
        try:
            created = await self.writer.create_job(job)
        except KubeError as exc:
            if exc.status in (400, 422):  # the Job itself is invalid: retrying cannot help
                return f"the Job was refused: {exc.message}", None
            reason = create_error_reason(exc)
            return None, Waiting(reason, f"the Job could not be created: {exc.message}")
        self._admission.created(export.key)
        if created:
            metrics.JOBS_CREATED.inc()
            delay = (self._clock() - export.created).total_seconds()
            metrics.CREATE_TO_JOB.observe(max(0.0, delay))
            log.info("created Job %s for %s/%s", job["metadata"]["name"], *export.key)
        return None, None

    async def _apply(
        self, export: ExportView, job: JobView | None, current: dict[str, Any], d: Decision
    ) -> Result:
        """Write the decision: delete the Job if it must go, patch the status, post Events."""
        assert self.writer is not None
        key = export.key
        queued = current.get("phase") == Phase.QUEUED.value and "queuePosition" in current
        if queued and "queuePosition" in d.status:
            # The position is written when the ExportJob enters the queue, not each time the
            # queue moves: first in, first out, so the place written is one it can only have
            # moved up from (no patch per queued export per admission).
            d.status["queuePosition"] = current["queuePosition"]
        if d.delete_job and job is not None and job is not self._tombstones.get(key):
            await self.writer.delete_job(namespace=job.namespace, name=job.name)
        patch = status_patch(current, d.status)
        if patch and not d.phase.finished and d.waiting is None and self._recorder.hold(key):
            return Result(requeue_after=CREATIONS_FIRST_MAX)  # queued again after the burst
        if patch:
            try:
                await self.writer.patch_status(
                    namespace=export.namespace, name=export.name, uid=export.uid, status=patch
                )
            except KubeError as exc:
                if exc.status in (404, 409):  # gone, or replaced by a namesake
                    return Result()
                raise
            metrics.STATUS_PATCHES.inc()
            self._written[export.uid] = dict(d.status)
        if d.transition:
            self._transition(export, d)
        if d.phase.finished:
            return await self._finished(export, d)
        if d.waiting is not None:
            if patch.get("conditions") is not None and not d.transition:
                self._recorder.post(export, "Warning", d.waiting.reason, d.waiting.message)
            raise JobCreateError(d.waiting)
        return Result(requeue_after=self._next_look(key))

    def _transition(self, export: ExportView, d: Decision) -> None:
        now = self._clock()
        metrics.record_transition(export, d, now=now)
        if d.phase.finished:
            self._admission.kick()  # a slot is free
        event_type = "Warning" if d.phase is Phase.FAILED or d.waiting else "Normal"
        reason = d.waiting.reason if d.waiting else d.phase.value
        self._recorder.post(export, event_type, reason, d.message or d.phase.value)

    async def _finished(self, export: ExportView, d: Decision) -> Result:
        """A finished ExportJob holds no slot; it is deleted once past its retention."""
        assert self.writer is not None
        self._tombstones.pop(export.key, None)
        self._admission.release(export.key)
        retention = self._settings.retention_seconds
        completed = parse_time(d.status.get("completionTime"))
        if not retention or completed is None:
            return Result()
        left = retention - (self._clock() - completed).total_seconds()
        if left >= 0:
            return Result(requeue_after=left + 1.0)
        await self.writer.delete_export(
            namespace=export.namespace, name=export.name, uid=export.uid
        )
        log.info("deleted %s/%s after retention", *export.key)
        return Result()

    def _next_look(self, key: Key) -> float:
        """Seconds until an unfinished ExportJob is looked at again without an event: the
        watchdog's deadline of a stuck pod, else the resync interval (a safety net)."""
        delay = self._settings.api.resync_interval_seconds
        if self._caches.job_of(key) is not None:
            due = self._watchdog.deadline(self._caches.pods.indexed(key))
            if due is not None:
                delay = min(delay, max(0.0, (due - self._clock()).total_seconds()) + 1.0)
        return delay
