"""The controller: watch events enqueue keys, workers reconcile one ExportJob at a time.

State comes from the cluster: informers (export_operator.informer: list + watch) cache views of the
ExportJobs, their Jobs and their pods; nothing acts before all three have listed, so a restarted
operator sees every Job that exists and admits nothing twice. Their events only put the
ExportJob's key into the work queue
(workqueue.py: queued once however many events arrive, never reconciled by two workers at once,
per-key backoff after a failure). `reconcile(key)` is level-based and the only writer: it creates
the Job of an admitted ExportJob, writes the status, deletes what must go, and on any API failure
raises, so the queue retries that key with backoff.

The admission pass decides which waiting ExportJobs get a Job (first in, first out, at most
`maxRunning` unfinished); it only marks keys admitted or gives queue positions, and enqueues them.
The little kept in memory bridges watch lag: keys admitted whose Job is not created yet, Jobs
created but not yet seen ("expectations"), the status last written, and the final view of a
finished Job deleted (TTL) before its ExportJob's status recorded the outcome.

With leader election (leader.py) every replica watches, and only the Lease holder's workers,
admission and housekeeping run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes_asyncio import client

from export_operator import kube, resource
from export_operator.backoff import Backoff
from export_operator.controller import metrics
from export_operator.controller.apicalls import ApiError, KubeWriter
from export_operator.controller.jobs import InvalidSpecError, build_job, resolve_inputs
from export_operator.controller.leader import LeaderElector, LeaseConfig, default_identity
from export_operator.controller.outcomes import STUCK_WAITING_REASONS
from export_operator.controller.queue import Key, plan_admission, waits_for_job
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.sources import SourceSizer
from export_operator.controller.status import Decision, Waiting, Watchdog, decide, status_patch
from export_operator.controller.views import (
    FINISHED_PHASES,
    ExportView,
    JobView,
    PodView,
    format_time,
    parse_time,
)
from export_operator.controller.workqueue import Result, WorkQueue, run_worker
from export_operator.informer import Informer, collection_path
from export_operator.resource import Phase, job_name_for

ExportListener = Callable[[str | None, Mapping[str, Any]], None]

log = logging.getLogger(__name__)

EXPECTATION_TIMEOUT = 120.0
"""Seconds after which a created-but-unseen Job stops being expected (the watch lost it)."""
CREATIONS_FIRST_MAX = 15.0
"""Seconds at most that status writes (not final ones) and Events wait while Jobs are being
created: in a burst the API server's capacity goes to the Jobs first."""
CREATIONS_QUIET = 1.0
"""Seconds without a Job create after which a burst counts as over (the waiting writes go)."""
CREATIONS_CHECK_INTERVAL = 0.05
"""Seconds the answer of `_creations_first` is reused (it scans the admitted keys)."""
CREATIONS_FIRST_POLL = 0.5
"""Seconds between two looks of the Event poster at whether the creations are done."""
ADMISSION_BATCH_DELAY = 0.1
"""Seconds the admission loop lets kicks pile up, so a burst is planned in few passes."""
ADMISSION_CPU_SHARE = 0.25
"""At most this share of the time goes to admission passes: one costs about 2 ms per 1,000
ExportJobs, so with a long backlog the passes come less often (and admit more each)."""


class JobCreateError(Exception):
    """The Job could not be created (quota, RBAC, API down): shown on the status, retried."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__(f"{waiting.reason}: {waiting.message}")
        self.waiting = waiting


def create_error_reason(exc: ApiError) -> str:
    """The condition reason for a refused Job create (kept stable: users and alerts match it)."""
    if exc.status == 403 and "exceeded quota" in exc.message.lower():
        return "QuotaExceeded"
    if exc.status == 403:
        return "Forbidden"
    if exc.retryable:
        return "APIUnavailable"
    return "CreateFailed"


def _stuck(pod: PodView) -> bool:
    """A pod the watchdog must time: unschedulable, or its container cannot be started."""
    if pod.running or pod.terminated or pod.deleting:
        return False
    return pod.scheduled_reason == "Unschedulable" or pod.waiting_reason in STUCK_WAITING_REASONS


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pod_export_key(pod: PodView) -> Key:
    return (pod.namespace, pod.export_name)


class Controller:
    """All of the operator's behaviour: informers feed the work queue, workers reconcile."""

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
            start_timeout=settings.start_timeout_seconds,
        )
        self.queue: WorkQueue[Key] = WorkQueue(
            backoff=Backoff(base=settings.retry_base_seconds, cap=settings.retry_max_seconds)
        )
        self.writer: KubeWriter | None = None
        self.leader: LeaderElector | None = None
        self.leading = asyncio.Event()
        """Set while this replica acts (always, standalone). Stable: others may wait on it."""
        self.on_leading: list[Callable[[], None]] = []
        """Called each time this replica starts to lead (e.g. the notifier's replay)."""
        self.exports: Informer[ExportView] = self._informer(
            resource.API_VERSION, resource.PLURAL, ExportView.from_body
        )
        self.jobs: Informer[JobView] = self._informer(
            "batch/v1", "jobs", JobView.from_body, label_selector=resource.LABEL_EXPORT
        )
        """The processor's Jobs, by (namespace, Job name)."""
        self.pods: Informer[PodView] = self._informer(
            "v1", "pods", PodView.from_body, label_selector=resource.LABEL_EXPORT
        )
        """The processor's pods, indexed by their ExportJob."""
        self.pods.index_by = _pod_export_key
        self.informers = (self.exports, self.jobs, self.pods)
        self.exports.listeners.append(self.on_export)
        self.jobs.listeners.append(self.on_job)
        self.pods.listeners.append(self.on_pod)
        self.export_listeners: list[ExportListener] = []
        """Called with every ExportJob event (type, raw body), e.g. the notifier's."""
        self._watch_api: client.ApiClient | None = None
        self.sizer = SourceSizer()
        self.admitted: set[Key] = set()
        """Keys the admission pass gave a slot whose Job is not seen yet (create may be failing)."""
        self.expected: dict[Key, float] = {}
        """Keys whose Job this process created (or found existing), not yet seen: since when."""
        self.positions: dict[Key, int] = {}
        self.written: dict[str, dict[str, Any]] = {}
        """ExportJob uid → the owned status fields last written (fresher than the watch)."""
        self.tombstones: dict[Key, JobView] = {}
        """The last view of a finished Job the watch saw deleted (TTL), until its outcome is
        recorded."""
        self._creations_pending_since: float | None = None
        self._creations_checked = 0.0
        self._last_create = 0.0
        self.creations_quiet = CREATIONS_QUIET
        """See CREATIONS_QUIET (0 in unit tests: a write right after a create goes at once)."""
        self._flush: asyncio.TimerHandle | None = None
        self._checked: set[str] = set()
        """Uids of ExportJobs whose spec gave a Job manifest (checked before admission)."""
        self._deferred: set[Key] = set()
        """Keys whose status write waits for the pending Job creations (see _creations_first)."""
        self._kick = asyncio.Event()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10000)
        self._tasks: list[asyncio.Task[Any]] = []

    def _informer(
        self,
        api_version: str,
        plural: str,
        decode: Callable[[Mapping[str, Any]], Any],
        *,
        label_selector: str = "",
    ) -> Informer[Any]:
        s = self.settings
        return Informer(
            api=None,
            path=collection_path(api_version, plural, s.namespace),
            decode=decode,
            label_selector=label_selector,
            watch_timeout=s.watch_server_timeout_seconds,
            client_timeout=s.watch_client_timeout_seconds,
            request_timeout=s.request_timeout_seconds,
            connect_timeout=s.connect_timeout_seconds,
        )

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the API clients and start the informers; once they have listed, leader election
        (or lead at once), workers and loops."""
        # trust_env=False: no netrc/proxy lookups (a thread hop) on every API call.
        api = await kube.new_api_client(trust_env=False)
        self.writer = KubeWriter(api, timeout=self.settings.request_timeout_seconds)
        # The watches hold their connections for minutes: a client of their own.
        self._watch_api = await kube.new_api_client(trust_env=False)
        for informer in self.informers:
            informer.api = self._watch_api
        self._tasks = [asyncio.create_task(i.run()) for i in self.informers]
        self._tasks.append(asyncio.create_task(self._start_acting(api)))

    async def _start_acting(self, api: client.ApiClient) -> None:
        """Once every informer has listed: leader election (or lead at once), workers, loops."""
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        log.info(
            "caches filled: %d ExportJobs, %d Jobs, %d pods",
            len(self.exports.items),
            len(self.jobs.items),
            len(self.pods.items),
        )
        s = self.settings
        loops = [
            self._admission_loop(),
            self._housekeeping_loop(),
            *(self._event_loop() for _ in range(4)),
        ]
        if s.standalone:
            self._start_leading()
            self.leading.set()
        else:
            self.leader = LeaderElector(
                client.CoordinationV1Api(api),
                LeaseConfig(
                    namespace=s.lease_namespace or s.namespace or "default",
                    name=s.lease_name,
                    identity=default_identity(),
                    lease_duration=s.lease_duration_seconds,
                    renew_deadline=s.lease_renew_deadline_seconds,
                    retry_period=s.lease_retry_period_seconds,
                ),
                on_started=self._start_leading,
                request_timeout=min(s.request_timeout_seconds, s.lease_renew_deadline_seconds),
                leading=self.leading,
            )
            loops.append(self.leader.run())
        workers = [
            run_worker(self.queue, self.reconcile, on_error=self._on_error, gate=self.leading)
            for _ in range(s.workers)
        ]
        self._tasks += [asyncio.create_task(c) for c in [*workers, *loops]]

    async def stop(self) -> None:
        """Stop the workers and loops, hand the Lease over, close the API client."""
        self.queue.shut_down()
        if self._flush is not None:
            self._flush.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.leader is not None:
            await self.leader.release()
        if self.writer is not None:
            await self.writer.api.close()
            self.writer = None
        if self._watch_api is not None:
            await self._watch_api.close()
            self._watch_api = None

    def _start_leading(self) -> None:
        """(Re)gaining the lead: forget what another leader may have changed meanwhile and look at
        every ExportJob again."""
        self.written.clear()
        self.admitted.clear()
        self.positions.clear()
        for key in list(self.exports.items):
            self.queue.add(key)
        self.kick()
        for callback in self.on_leading:
            callback()

    def export_bodies(self) -> Iterator[dict[str, Any]]:
        """Every ExportJob the cache holds, as a plain body (metadata, spec, status)."""
        for view in list(self.exports.items.values()):
            yield {
                "metadata": {
                    "namespace": view.namespace,
                    "name": view.name,
                    "uid": view.uid,
                    "generation": view.generation,
                    "creationTimestamp": format_time(view.created),
                },
                "spec": view.spec,
                "status": view.status,
            }

    def kick(self) -> None:
        """Ask the admission loop for a pass."""
        self._kick.set()

    def _on_error(self, key: Key, exc: BaseException, delay: float) -> None:
        failures = self.queue.failures(key)
        if isinstance(exc, JobCreateError):
            metrics.RECONCILE_ERRORS.labels("create_job").inc()
        elif isinstance(exc, ApiError):
            metrics.RECONCILE_ERRORS.labels("write").inc()
        else:
            log.error("reconcile of %s/%s failed", *key, exc_info=exc)
            return
        if failures == 1 or failures % 10 == 0:  # the first and then every tenth: no log floods
            log.warning("%s/%s: %s (attempt %d, retry in %.1fs)", *key, exc, failures, delay)

    # -- views ---------------------------------------------------------------------------------
    def export_view(self, key: Key) -> ExportView | None:
        return self.exports.get(key)

    def job_view(self, key: Key) -> JobView | None:
        """The Job of the ExportJob `key` (by its deterministic name and its label)."""
        view = self.jobs.get((key[0], job_name_for(key[1])))
        return view if view is not None and view.export_name == key[1] else None

    def pod_views(self, key: Key) -> list[PodView]:
        return self.pods.indexed(key)

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
        if written is None:
            return export.status
        seen = export.status
        if all(seen.get(k) == v for k, v in written.items()):
            del self.written[export.uid]  # the watch caught up
            return seen
        return {**seen, **written}

    # -- the informers' listeners: enqueue only ------------------------------------------------
    def on_export(
        self,
        event_type: str | None,
        view: ExportView,
        old: ExportView | None,
        body: Mapping[str, Any],
    ) -> None:
        key = view.key
        if event_type == "DELETED":
            self.written.pop(view.uid, None)
            self._checked.discard(view.uid)
            self.admitted.discard(key)
            self.expected.pop(key, None)
            self.positions.pop(key, None)
            self.tombstones.pop(key, None)
            self.kick()
        elif event_type in (None, "ADDED") or view.cancel_requested or view.finished:
            self.kick()  # new, cancelled or finished: the queue changes
        self.queue.add(key)
        for listener in self.export_listeners:
            listener(event_type, body)

    def on_job(
        self, event_type: str | None, job: JobView, old: JobView | None, body: Mapping[str, Any]
    ) -> None:
        if not job.export_name:
            return
        key = (job.namespace, job.export_name)
        if event_type == "DELETED" and job.name == job_name_for(job.export_name) and job.ending:
            self.tombstones[key] = job
        if job.finished or job.deleting or event_type == "DELETED":
            self.kick()  # a slot may have freed
        self.queue.add(key)

    def on_pod(
        self, event_type: str | None, pod: PodView, old: PodView | None, body: Mapping[str, Any]
    ) -> None:
        if not pod.export_name or (event_type == "MODIFIED" and pod == old):
            return  # nothing the controller reads has changed (most pod updates)
        self.queue.add((pod.namespace, pod.export_name))

    # -- reconcile -----------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> Result:
        """Bring one ExportJob's Job and status in line with the cluster; raise to retry."""
        metrics.RECONCILES.labels("queue").inc()
        writer = self.writer
        assert writer is not None
        export = self.export_view(key)
        job = self.job_view(key)
        if export is None:
            if job is not None and not job.deleting:  # the ownerReference would do it, later
                await writer.delete_job(namespace=job.namespace, name=job.name)
            self.queue.discard(key)
            return Result()
        if export.deleting:
            return Result()
        job = job or self.tombstones.get(key)
        if job is not None:
            self.expected.pop(key, None)
        current = self.current_status(export)
        fresh = self._freshest(export)
        if (
            job is None
            and fresh.job_name
            and key not in self.expected
            and fresh.phase in (Phase.PENDING, Phase.RUNNING)
            and await writer.job_exists(namespace=export.namespace, name=fresh.job_name)
        ):
            # The status names a Job the watch does not show (yet): it lags, e.g. while it
            # re-lists after an API outage. Asked directly: it exists, so nothing disappeared.
            self.expected[key] = time.monotonic()
        invalid: str | None = None
        waiting: Waiting | None = None
        if job is None and key not in self.expected and waits_for_job(fresh):
            if self.settings.max_running == 0:
                self.admitted.add(key)  # no limit: no need to wait for an admission pass
            if key in self.admitted:
                invalid, waiting = await self._create_job(export)
            elif fresh.phase is not Phase.QUEUED and export.uid not in self._checked:
                # Not admitted yet: a spec that can never run fails now, not after its wait.
                # (Checked once: the spec is immutable, and while the Queued write waits for
                # the Job creations of a burst, the key comes back.)
                built = await self._build_job(export, sized=False)
                invalid = built if isinstance(built, str) else None
                if invalid is None:
                    self._checked.add(export.uid)
        decision = decide(
            export=export,
            current=current,
            job=job,
            pods=self.pod_views(key),
            job_in_flight=key in self.expected,
            queue_position=self.positions.get(key),
            invalid_spec=invalid,
            waiting=waiting,
            now=self.clock(),
            watchdog=self.watchdog,
        )
        log.debug(
            "reconcile %s: job %s, admitted %s, expected %s, phase %s",
            key[1],
            job is not None,
            key in self.admitted,
            key in self.expected,
            decision.phase.value,
        )
        if decision.awaiting_admission:
            self.kick()
            return Result()
        if (
            decision.phase is Phase.QUEUED
            and "queuePosition" in decision.status
            and current.get("phase") == Phase.QUEUED.value
            and "queuePosition" in current
        ):
            # The position is written when the ExportJob enters the queue, not each time the
            # queue moves (a patch per queued export per admission): first in, first out, so
            # the place written is one it can only have moved up from.
            decision.status["queuePosition"] = current["queuePosition"]
        if decision.delete_job and job is not None and job is not self.tombstones.get(key):
            await writer.delete_job(namespace=job.namespace, name=job.name)
        patch = status_patch(current, decision.status)
        if patch and not decision.phase.finished and waiting is None and self._creations_first():
            self._deferred.add(key)  # queued again once the creations are done
            self._schedule_flush()
            return Result(requeue_after=CREATIONS_FIRST_MAX)
        if patch:
            try:
                await writer.patch_status(
                    namespace=export.namespace, name=export.name, uid=export.uid, status=patch
                )
            except ApiError as exc:
                if exc.status in (404, 409):  # gone, or replaced by a namesake
                    return Result()
                raise
            metrics.STATUS_PATCHES.inc()
            self.written[export.uid] = dict(decision.status)
        if decision.transition:
            self._on_transition(export, decision)
        if decision.phase.finished:
            self.tombstones.pop(key, None)
            self.admitted.discard(key)
            if self._past_retention(decision.status):
                await writer.delete_export(
                    namespace=export.namespace, name=export.name, uid=export.uid
                )
                log.info("deleted %s/%s after retention", *key)
            return Result()
        if waiting is not None:
            if patch.get("conditions") is not None and not decision.transition:
                self._post_event(export, "Warning", waiting.reason, waiting.message)
            raise JobCreateError(waiting)
        if job is not None and any(_stuck(p) for p in self.pod_views(key)):
            return Result(requeue_after=self.settings.housekeeping_interval_seconds)
        return Result()

    async def _build_job(self, export: ExportView, *, sized: bool) -> dict[str, Any] | str:
        """The Job manifest of an ExportJob, or why its spec cannot give one (INVALID_SPEC).

        `sized`: HEAD the source for its size when so configured (only for the real create)."""
        try:
            inputs = resolve_inputs(export=export, settings=self.settings)
            size = export.source_size
            if sized and size is None and self.settings.head_source:
                version = (export.spec.get("source") or {}).get("versionId")
                size = await self.sizer.size_of(inputs.source_uri, version_id=version)
            return build_job(export=export, inputs=inputs, settings=self.settings, source_size=size)
        except InvalidSpecError as exc:
            return str(exc)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # Bad input of this one export (a template field, a quantity): it fails, alone.
            return f"the Job could not be built: {type(exc).__name__}: {exc}"

    async def _create_job(self, export: ExportView) -> tuple[str | None, Waiting | None]:
        """Create the Job of an admitted ExportJob: (why the spec is invalid, why it waits)."""
        assert self.writer is not None
        job = await self._build_job(export, sized=True)
        if isinstance(job, str):
            return job, None
        self._last_create = time.monotonic()
        try:
            created = await self.writer.create_job(job)
        except ApiError as exc:
            if exc.status in (400, 422):  # the Job itself is invalid: retrying cannot help
                return f"the Job was refused: {exc.message}", None
            reason = create_error_reason(exc)
            return None, Waiting(reason, f"the Job could not be created: {exc.message}")
        self.expected[export.key] = time.monotonic()
        if created:
            metrics.JOBS_CREATED.inc()
            delay = (self.clock() - export.created).total_seconds()
            metrics.CREATE_TO_JOB.observe(max(0.0, delay))
            log.info("created Job %s for %s/%s", job["metadata"]["name"], *export.key)
        return None, None

    def _creations_first(self) -> bool:
        """Whether Jobs are being created (admitted ExportJobs wait for their Job, or one was
        created less than CREATIONS_QUIET ago), for at most CREATIONS_FIRST_MAX seconds in a
        row: then writes that can wait, wait."""
        now = time.monotonic()
        if now - self._creations_checked < CREATIONS_CHECK_INTERVAL:
            return self._creations_pending_since is not None and (
                now - self._creations_pending_since < CREATIONS_FIRST_MAX
            )
        self._creations_checked = now
        pending = now - self._last_create < self.creations_quiet or any(
            k not in self.expected for k in self.admitted
        )
        if not pending:
            self._creations_pending_since = None
            for key in self._deferred:
                self.queue.add(key)
            self._deferred.clear()
            return False
        if self._creations_pending_since is None:
            self._creations_pending_since = now
        return now - self._creations_pending_since < CREATIONS_FIRST_MAX

    def _schedule_flush(self) -> None:
        """Look again, once the creations may be over, whether the waiting writes can go (no
        event may come to ask)."""
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self.creations_quiet + 0.1, self._flush_deferred)

    def _flush_deferred(self) -> None:
        self._flush = None
        self._creations_checked = 0.0
        if self._creations_first() and self._deferred:
            self._schedule_flush()

    def _past_retention(self, status: dict[str, Any]) -> bool:
        retention = self.settings.retention_seconds
        completed = parse_time(status.get("completionTime"))
        if not retention or completed is None:
            return False
        return (self.clock() - completed).total_seconds() > retention

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
        event_type = "Warning" if decision.phase is Phase.FAILED or decision.waiting else "Normal"
        reason = decision.waiting.reason if decision.waiting else decision.phase.value
        self._post_event(export, event_type, reason, decision.message or decision.phase.value)

    def _post_event(self, export: ExportView, type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(
                {
                    "namespace": export.namespace,
                    "name": export.name,
                    "uid": export.uid,
                    "type_": type_,
                    "reason": reason,
                    "message": message,
                    "now": self.clock(),
                }
            )

    # -- admission -----------------------------------------------------------------------------
    async def _admission_loop(self) -> None:
        took = 0.0
        while True:
            await self._kick.wait()
            await asyncio.sleep(max(ADMISSION_BATCH_DELAY, took / ADMISSION_CPU_SHARE - took))
            await self.leading.wait()
            self._kick.clear()
            started = time.monotonic()
            try:
                self.admit_once()
            except Exception:  # one bad pass must not stop admission for good
                log.exception("admission pass failed")
                await asyncio.sleep(1.0)
                self.kick()
            took = time.monotonic() - started

    def admit_once(self) -> None:
        """One admission pass: mark the head of the queue admitted, number the rest; enqueue
        the keys whose place changed (their reconcile creates the Job or writes the position)."""
        jobs: dict[Key, JobView] = {}
        for job in self.jobs.items.values():
            if job.export_name and job.name == job_name_for(job.export_name):
                jobs[(job.namespace, job.export_name)] = job
        expiry = time.monotonic() - EXPECTATION_TIMEOUT
        for key, since in list(self.expected.items()):
            if key in jobs or since < expiry:
                del self.expected[key]
        waiting: list[ExportView] = []
        for view in self.exports.items.values():
            view = self._freshest(view)
            if waits_for_job(view) and view.key not in jobs:
                waiting.append(view)
        waiting_keys = {e.key for e in waiting}
        self.admitted &= waiting_keys
        plan = plan_admission(
            exports=waiting,
            jobs=jobs,
            in_flight=self.admitted | self.expected.keys(),
            max_running=self.settings.max_running,
        )
        log.debug("admission pass: %d admitted, %d queued", len(plan.admit), len(plan.positions))
        for export in reversed(plan.admit):  # each goes to the head: the oldest ends first
            self.admitted.add(export.key)
            self.positions.pop(export.key, None)
            self.queue.add(export.key, urgent=True)  # Job creations before status writes
        metrics.QUEUE_DEPTH.set(len(plan.positions))
        metrics.RUNNING_JOBS.set(plan.running + len(plan.admit))
        by_key = {e.key: e for e in waiting}
        previous, self.positions = self.positions, plan.positions
        for key in plan.positions:
            # Entering the queue: its reconcile writes Queued and the position (a write that
            # fails or waits is retried by the queue). A mere shift of an ExportJob already in
            # the queue is not written (see reconcile).
            if key not in previous and by_key[key].phase_value != Phase.QUEUED.value:
                self.queue.add(key)

    # -- housekeeping: retention and resync ----------------------------------------------------
    async def _housekeeping_loop(self) -> None:
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.housekeeping_interval_seconds)
            await self.leading.wait()
            resync = time.monotonic() - last_resync >= self.settings.resync_interval_seconds
            if resync:
                last_resync = time.monotonic()
            try:
                self.housekeeping(resync=resync)
            except Exception:
                log.exception("housekeeping failed")

    def housekeeping(self, *, resync: bool = False) -> None:
        """Enqueue finished ExportJobs past retention, and with `resync` every unfinished one
        (a safety net under the watch events)."""
        now = self.clock()
        retention = self.settings.retention_seconds
        for key, export in list(self.exports.items.items()):
            if export.deleting:
                continue
            status = self.current_status(export)
            if status.get("phase") not in FINISHED_PHASES:
                if resync:
                    self.queue.add(key)
                continue
            completed = parse_time(status.get("completionTime"))
            if retention and completed and (now - completed).total_seconds() > retention:
                self.queue.add(key)
        self.kick()

    # -- Events --------------------------------------------------------------------------------
    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            while self._creations_first():  # noqa: ASYNC110 - a bounded poll, no event to wait on
                await asyncio.sleep(CREATIONS_FIRST_POLL)
            if self.writer is None:
                continue
            try:
                await self.writer.post_event(**event)
            except ApiError as exc:
                log.debug("event not posted: %s", exc)
