"""The reconciler: turns what the watches show into Jobs, status patches, deletions and Events.

State comes from the cluster: kopf indexes of ExportJobs, their Jobs and their pods (kopf fills
them from the initial listing before any handler runs, so a restarted operator sees every Job that
exists and admits nothing twice). The little kept in memory only bridges watch lag: Jobs created
but not yet seen, and the status last written. One admission loop decides which waiting
ExportJobs get a Job; `reconcile()` is level-based and is the only writer of status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import kopf

from export_operator import kube
from export_operator.controller import metrics
from export_operator.controller.apicalls import ApiError, KubeWriter
from export_operator.controller.jobs import InvalidSpecError, build_job, resolve_inputs
from export_operator.controller.outcomes import IMAGE_PULL_REASONS
from export_operator.controller.queue import Key, plan_admission, waits_for_job
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.sources import SourceSizer
from export_operator.controller.status import Decision, Watchdog, decide, status_patch
from export_operator.controller.views import ExportView, JobView, PodView, parse_time
from export_operator.resource import Phase, job_name_for

log = logging.getLogger(__name__)

IN_FLIGHT_EXPIRY = 120.0
"""Seconds after which a created-but-unseen Job stops holding a slot (the watch lost it)."""
RETRY_DELAY = 2.0
FINISHED_PHASES = frozenset(p.value for p in Phase if p.finished)
CREATIONS_FIRST_MAX = 5.0
"""Seconds a status patch or Event waits at most for pending Job creations to finish."""
ADMISSION_BATCH_DELAY = 0.1
"""Seconds the admission loop lets kicks pile up, so a burst is planned in few passes."""


def _stuck(pod: PodView) -> bool:
    """A pod the watchdog must time: unschedulable, or failing to pull its image."""
    if pod.running or pod.terminated or pod.deleting:
        return False
    return pod.scheduled_reason == "Unschedulable" or pod.waiting_reason in IMAGE_PULL_REASONS


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Controller:
    """All of the operator's behaviour behind the kopf handlers (see handlers.py)."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.watchdog = Watchdog(
            unschedulable_timeout=settings.unschedulable_timeout_seconds,
            image_pull_timeout=settings.image_pull_timeout_seconds,
        )
        self.writer: KubeWriter | None = None
        self.exports: kopf.Index[Key, ExportView] | None = None
        self.jobs: kopf.Index[Key, JobView] | None = None
        self.pods: kopf.Index[Key, PodView] | None = None
        self.sizer = SourceSizer()
        self.in_flight: dict[Key, float] = {}
        self.positions: dict[Key, int] = {}
        self.refused: dict[Key, str] = {}
        self.written: dict[str, dict[str, Any]] = {}
        """ExportJob uid → the owned status fields last written (fresher than the watch)."""
        self._locks: dict[Key, asyncio.Lock] = {}
        self._last_seen: dict[tuple[str, str, str], object] = {}
        """The last Job/Pod view handled per object: events that change nothing are skipped."""
        self._positions_dirty: set[Key] = set()
        self._kick = asyncio.Event()
        self._creating = 0
        self._creations_idle = asyncio.Event()
        self._creations_idle.set()
        self._create_slots = asyncio.Semaphore(settings.create_concurrency)
        self._status_slots = asyncio.Semaphore(settings.status_concurrency)
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10000)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the API client and start the admission, housekeeping and Event loops."""
        # trust_env=False: no netrc/proxy lookups (a thread hop) on every API call.
        api = await kube.new_api_client(trust_env=False)
        self.writer = KubeWriter(api, timeout=self.settings.request_timeout_seconds)
        self._loops = [
            asyncio.create_task(self._admission_loop(), name="admission"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            asyncio.create_task(self._queue_status_loop(), name="queue-status"),
            *(asyncio.create_task(self._event_loop(), name=f"events-{i}") for i in range(4)),
        ]

    async def stop(self) -> None:
        """Stop the loops and close the API client."""
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        if self.writer is not None:
            await self.writer.api.close()
            self.writer = None

    def attach(
        self,
        *,
        exports: kopf.Index[Key, ExportView],
        jobs: kopf.Index[Key, JobView],
        pods: kopf.Index[Key, PodView],
    ) -> None:
        """Keep the (live) kopf indexes; kopf hands them to every handler, complete."""
        if self.exports is None:
            self.exports, self.jobs, self.pods = exports, jobs, pods
            self.kick()

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def kick(self) -> None:
        """Ask the admission loop for a pass."""
        self._kick.set()

    # -- views ---------------------------------------------------------------------------------
    def export_view(self, key: Key) -> ExportView | None:
        if self.exports is None or key not in self.exports:
            return None
        views = [v for v in self.exports[key] if not v.deleting] or list(self.exports[key])
        return max(views, key=lambda v: v.created) if views else None

    def job_view(self, key: Key) -> JobView | None:
        if self.jobs is None or key not in self.jobs:
            return None
        wanted = job_name_for(key[1])
        views = [v for v in self.jobs[key] if v.name == wanted]
        return views[0] if views else None

    def pod_views(self, key: Key) -> list[PodView]:
        if self.pods is None or key not in self.pods:
            return []
        return list(self.pods[key])

    def _freshest(self, export: ExportView) -> ExportView:
        """The view with the phase and Job name this process last wrote (the watch may lag)."""
        written = self.written.get(export.uid)
        if written is None:
            return export
        return export.with_progress(
            phase=str(written.get("phase") or ""), job_name=str(written.get("jobName") or "")
        )

    def current_status(self, export: ExportView) -> dict[str, Any]:
        written = self.written.get(export.uid)
        if written is not None:
            return {**export.status, **written}
        return export.status

    # -- handlers' entry points ----------------------------------------------------------------
    async def on_export(self, *, event_type: str | None, body: Any) -> None:
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            await self._forget(key, uid=meta.get("uid") or "")
            return
        await self.reconcile(key, trigger="exportjob")

    async def on_job(self, *, event_type: str | None, body: Any) -> None:
        job = JobView.from_body(body)
        if not job.export_name:
            return
        key = (job.namespace, job.export_name)
        if event_type != "DELETED" and self._unchanged(("job", job.namespace, job.name), job):
            return  # a change in fields the status does not derive from
        if event_type == "DELETED":
            self._last_seen.pop(("job", job.namespace, job.name), None)
        if job.finished or job.deleting or event_type == "DELETED":
            self.kick()  # a slot may have freed
        await self.reconcile(key, trigger="job")

    async def on_pod(self, *, event_type: str | None, body: Any) -> None:
        pod = PodView.from_body(body)
        if event_type != "DELETED" and self._unchanged(("pod", pod.namespace, pod.name), pod):
            return
        if event_type == "DELETED":
            self._last_seen.pop(("pod", pod.namespace, pod.name), None)
        if pod.export_name:
            await self.reconcile((pod.namespace, pod.export_name), trigger="pod")

    def _unchanged(self, ident: tuple[str, str, str], view: object) -> bool:
        """Whether this object's view equals the one last handled (and remember it)."""
        if self._last_seen.get(ident) == view:
            return True
        self._last_seen[ident] = view
        return False

    async def _forget(self, key: Key, *, uid: str) -> None:
        """An ExportJob is gone: its Job goes too (the ownerReference would do it, later)."""
        self.written.pop(uid, None)
        self.in_flight.pop(key, None)
        self.positions.pop(key, None)
        self.refused.pop(key, None)
        self._locks.pop(key, None)
        job = self.job_view(key)
        if job is not None and not job.deleting and self.writer is not None:
            try:
                await self.writer.delete_job(namespace=job.namespace, name=job.name)
            except ApiError as exc:
                log.warning("could not delete Job %s/%s: %s", job.namespace, job.name, exc)
        self.kick()

    # -- reconcile -----------------------------------------------------------------------------
    async def reconcile(self, key: Key, *, trigger: str) -> None:
        """Bring one ExportJob's status (and its Job's existence) in line with the cluster."""
        metrics.RECONCILES.labels(trigger).inc()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            export = self.export_view(key)
            if export is None or export.deleting or self.writer is None:
                return
            job = self.job_view(key)
            if job is not None:
                self.in_flight.pop(key, None)
            current = self.current_status(export)
            decision = decide(
                export=export,
                current=current,
                job=job,
                pods=self.pod_views(key),
                job_in_flight=key in self.in_flight,
                queue_position=self.positions.get(key),
                invalid_spec=self.refused.get(key),
                now=self.clock(),
                watchdog=self.watchdog,
            )
            if decision.awaiting_admission:
                self.kick()
                return
            if (
                decision.phase is Phase.QUEUED
                and current.get("phase") == Phase.QUEUED.value
                and "queuePosition" in current
                and trigger != "queue"
            ):
                # A mere shift in the queue is written by the rate-limited queue loop only.
                decision.status["queuePosition"] = current["queuePosition"]
            if decision.delete_job and job is not None:
                try:
                    async with self._status_slots:
                        await self.writer.delete_job(namespace=job.namespace, name=job.name)
                except ApiError as exc:
                    metrics.RECONCILE_ERRORS.labels("delete_job").inc()
                    log.warning("could not delete Job %s/%s: %s", job.namespace, job.name, exc)
                    self._retry_later(key)
            patch = status_patch(current, decision.status)
            if patch:
                await self._after_creations()
                try:
                    async with self._status_slots:
                        await self.writer.patch_status(
                            namespace=export.namespace,
                            name=export.name,
                            uid=export.uid,
                            status=patch,
                        )
                except ApiError as exc:
                    if exc.status in (404, 409):  # gone, or replaced by a namesake
                        return
                    metrics.RECONCILE_ERRORS.labels("patch_status").inc()
                    log.warning("status of %s/%s not written: %s", *key, exc)
                    self._retry_later(key)
                    return
                self.written[export.uid] = dict(decision.status)
            if decision.transition:
                self._on_transition(export, decision)

    def _on_transition(self, export: ExportView, decision: Decision) -> None:
        metrics.PHASE_TRANSITIONS.labels(decision.phase.value).inc()
        now = self.clock()
        if decision.phase.finished:
            self.kick()
        if decision.phase is Phase.FAILED and decision.error is not None:
            metrics.FAILURES.labels(decision.error.code).inc()
        if decision.phase is Phase.SUCCEEDED:
            fmt = str(export.spec.get("format") or "unknown")
            metrics.EXPORT_DURATION.labels(fmt).observe((now - export.created).total_seconds())
        if decision.result is not None:
            metrics.record_result(decision.result)
        event_type = "Warning" if decision.phase is Phase.FAILED else "Normal"
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(
                {
                    "namespace": export.namespace,
                    "name": export.name,
                    "uid": export.uid,
                    "type_": event_type,
                    "reason": decision.phase.value,
                    "message": decision.message or decision.phase.value,
                    "now": now,
                }
            )

    async def _after_creations(self) -> None:
        """Let pending Job creations go first (bounded): in a burst the API server's capacity
        goes to the Jobs, and the status patches and Events follow."""
        if not self._creations_idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._creations_idle.wait(), timeout=CREATIONS_FIRST_MAX)

    def _retry_later(self, key: Key, delay: float = RETRY_DELAY) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await self.reconcile(key, trigger="retry")

        self._spawn(later(), name=f"retry-{key[0]}/{key[1]}")

    # -- admission -----------------------------------------------------------------------------
    async def _admission_loop(self) -> None:
        while True:
            await self._kick.wait()
            await asyncio.sleep(ADMISSION_BATCH_DELAY)
            self._kick.clear()
            try:
                self.admit_once()
            except Exception:  # one bad pass must not stop admission for good
                log.exception("admission pass failed")
                await asyncio.sleep(RETRY_DELAY)
                self.kick()

    def admit_once(self) -> None:
        """One admission pass: start Job creations for the head of the queue, queue the rest."""
        if self.exports is None or self.jobs is None:
            return
        jobs: dict[Key, JobView] = {}
        for key in list(self.jobs):
            job = self.job_view(key)
            if job is not None:
                jobs[key] = job
        expiry = time.monotonic() - IN_FLIGHT_EXPIRY
        for key, since in list(self.in_flight.items()):
            if key in jobs or since < expiry:
                del self.in_flight[key]
        exports = []
        for key in list(self.exports):
            view = self.export_view(key)
            if view is None or not waits_for_job(view):
                continue
            written = self.written.get(view.uid)
            if written is not None and (
                written.get("jobName") or written.get("phase") in FINISHED_PHASES
            ):
                continue  # the watch has not caught up with what this process wrote
            if written is not None:
                view = self._freshest(view)
            exports.append(view)
        by_key = {e.key: e for e in exports}
        while True:
            plan = plan_admission(
                exports=exports,
                jobs=jobs,
                in_flight=self.in_flight,
                max_running=self.settings.max_running,
                refused=self.refused,
            )
            admitted = []
            for export in plan.admit:
                try:
                    inputs = resolve_inputs(export=export, settings=self.settings)
                except InvalidSpecError as exc:
                    self.refused[export.key] = str(exc)
                    self._spawn(self.reconcile(export.key, trigger="invalid"), name="invalid")
                    continue
                admitted.append((export, inputs))
            if len(admitted) == len(plan.admit):
                break
        for export, inputs in admitted:
            self._creating += 1
            self._creations_idle.clear()
            self.in_flight[export.key] = time.monotonic()
            self.positions.pop(export.key, None)
            self._spawn(self._create_job(export, inputs), name=f"create-{export.name}")
        metrics.QUEUE_DEPTH.set(len(plan.positions))
        metrics.RUNNING_JOBS.set(plan.running + len(admitted))
        previous, self.positions = self.positions, plan.positions
        for key, position in plan.positions.items():
            if previous.get(key) == position:
                continue
            if by_key[key].phase_value == Phase.QUEUED.value:
                self._positions_dirty.add(key)  # only a new number: rewritten in batches
            else:
                self._spawn(self.reconcile(key, trigger="queued"), name="queued")

    async def _create_job(self, export: ExportView, inputs: Any) -> None:
        try:
            await self._create_job_once(export, inputs)
        finally:
            self._creating -= 1
            if self._creating == 0:
                self._creations_idle.set()

    async def _create_job_once(self, export: ExportView, inputs: Any) -> None:
        assert self.writer is not None
        async with self._create_slots:
            size = export.source_size
            if size is None and self.settings.head_source:
                version = (export.spec.get("source") or {}).get("versionId")
                size = await self.sizer.size_of(inputs.source_uri, version_id=version)
            job = build_job(export=export, inputs=inputs, settings=self.settings, source_size=size)
            try:
                created = await self.writer.create_job(job)
            except ApiError as exc:
                self.in_flight.pop(export.key, None)
                if exc.status == 422:  # the Job itself is invalid: retrying cannot help
                    self.refused[export.key] = f"the Job was refused: {exc.message}"
                    self._spawn(self.reconcile(export.key, trigger="invalid"), name="invalid")
                    return
                metrics.RECONCILE_ERRORS.labels("create_job").inc()
                if exc.status not in (403, 404):  # 403/404: the namespace is going away
                    log.warning("Job for %s/%s not created: %s", *export.key, exc)
                await asyncio.sleep(RETRY_DELAY)
                self.kick()
                return
        if created:
            metrics.JOBS_CREATED.inc()
            delay = (self.clock() - export.created).total_seconds()
            metrics.CREATE_TO_JOB.observe(max(0.0, delay))
            log.info("created Job %s for %s/%s", job["metadata"]["name"], *export.key)
        self._spawn(self.reconcile(export.key, trigger="admission"), name="admitted")

    async def _queue_status_loop(self) -> None:
        """Rewrite changed queue positions, head of the queue first, at a bounded rate: one
        admission shifts every queued ExportJob, and a patch each would swamp the API server."""
        interval = self.settings.queue_status_interval_seconds
        budget = max(1, int(self.settings.queue_status_rate * interval))
        while True:
            await asyncio.sleep(interval)
            dirty = sorted(
                (k for k in self._positions_dirty if k in self.positions),
                key=lambda k: self.positions[k],
            )
            batch, rest = dirty[:budget], dirty[budget:]
            self._positions_dirty = set(rest)
            await asyncio.gather(
                *(self.reconcile(key, trigger="queue") for key in batch), return_exceptions=True
            )

    # -- housekeeping: watchdog, retention, resync ---------------------------------------------
    async def _housekeeping_loop(self) -> None:
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.housekeeping_interval_seconds)
            resync = time.monotonic() - last_resync >= self.settings.resync_interval_seconds
            if resync:
                last_resync = time.monotonic()
            try:
                await self.housekeeping(resync=resync)
            except Exception:
                log.exception("housekeeping failed")

    async def housekeeping(self, *, resync: bool = False) -> None:
        """The watchdog's clock (ExportJobs with a stuck pod), retention, and with `resync` a
        re-derivation of every unfinished ExportJob (a safety net under the watch events)."""
        if self.exports is None or self.writer is None:
            return
        now = self.clock()
        retention = self.settings.retention_seconds
        pending: list[Coroutine[Any, Any, None]] = []
        for key in list(self.exports):
            export = self.export_view(key)
            if export is None or export.deleting:
                continue
            status = self.current_status(export)
            if status.get("phase") not in FINISHED_PHASES:
                if resync or any(_stuck(pod) for pod in self.pod_views(key)):
                    pending.append(self.reconcile(key, trigger="resync" if resync else "watchdog"))
                continue
            completed = parse_time(status.get("completionTime"))
            if retention and completed and (now - completed).total_seconds() > retention:
                pending.append(self._expire(export))
        await asyncio.gather(*pending, return_exceptions=True)
        self.kick()

    async def _expire(self, export: ExportView) -> None:
        assert self.writer is not None
        try:
            await self.writer.delete_export(
                namespace=export.namespace, name=export.name, uid=export.uid
            )
            log.info("deleted %s/%s after retention", export.namespace, export.name)
        except ApiError as exc:
            log.warning("retention could not delete %s/%s: %s", *export.key, exc)

    # -- Events --------------------------------------------------------------------------------
    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            await self._after_creations()
            if self.writer is None:
                continue
            try:
                await self.writer.post_event(**event)
            except ApiError as exc:
                log.debug("event not posted: %s", exc)
