"""The manager: wires the controller together and runs it (controller-runtime's `Manager`).

It owns the API clients, the caches (informers), the work queue and its workers, leader election,
and the runnables that act only while this replica leads: the workers, the admission passes and
the Event posters. Watch events become keys here (the event handlers: an ExportJob's own key, a
Job's or a pod's owner); nothing acts before every cache has listed, so a restarted operator sees
every Job that exists and admits nothing twice. With leader election (leader.py) every replica
watches, and only the Lease holder acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from export_operator.controller import metrics
from export_operator.controller.admission import Admission, FairShare
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.caches import Caches
from export_operator.controller.leader import LeaderElector
from export_operator.controller.notify import Notifier
from export_operator.controller.outcomes import JobCreateError
from export_operator.controller.reconciler import Reconciler
from export_operator.controller.recorder import CREATIONS_QUIET, EventRecorder
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView, JobView, PodView
from export_operator.controller.split_plan import ranges_wanted
from export_operator.controller.workqueue import WorkQueue, run_worker
from export_operator.informer import Key
from export_operator.kube import KubeClient, KubeError
from export_operator.resource import job_name_for

log = logging.getLogger(__name__)

EVENT_POSTERS = 4
"""Events posted at once."""
STOP_GRACE_SECONDS = 15.0
"""Stopping waits this long for the keys in hand (a callback's 10 s timeout, then its write)."""


class Manager:
    """Clients, caches, leader election and the runnables; see the module docstring."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        creations_quiet: float = CREATIONS_QUIET,
    ) -> None:
        self.settings = settings
        self.caches = Caches(settings)
        self.queue: WorkQueue[Key] = WorkQueue(backoff=settings.api.retry)
        metrics.OWNERS.configure(settings.admission.shares)  # the owners named in its metrics
        self.admission = Admission(
            exports=self.caches.exports,
            jobs=self.caches.jobs,
            queue=self.queue,
            max_running=settings.admission.max_running,
            policy=FairShare(settings.admission.shares),
            wants=functools.partial(ranges_wanted, settings=settings),
        )
        self.recorder = EventRecorder(
            queue=self.queue, creating=self.admission.creating, clock=clock, quiet=creations_quiet
        )
        self.reconciler = Reconciler(
            settings=settings,
            caches=self.caches,
            admission=self.admission,
            recorder=self.recorder,
            clock=clock,
        )
        self.admission.fresh = self.reconciler.fresh
        self.notifier = Notifier(settings=settings, exports=self.caches.exports, clock=clock)
        """The second reconciler: completion callbacks, its own queue and workers."""
        self.leading = asyncio.Event()
        """Set while this replica acts (always, standalone). Stable: others may wait on it."""
        self._apis: list[KubeClient] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.caches.exports.listeners += [self._on_export, self.notifier.on_export]
        self.caches.jobs.listeners.append(self._on_job)
        self.caches.pods.listeners.append(self._on_pod)

    def connect(self, writer: KubeWriter | None, notifier_writer: KubeWriter | None = None) -> None:
        """Send the reconciler's writes and the Events to `writer`, the notifier's to
        `notifier_writer` (default: the same)."""
        self.reconciler.writer = self.recorder.writer = writer
        self.notifier.writer = notifier_writer or writer

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the API clients and start the informers; once they have listed, the rest."""
        within = self.settings.api.request_timeout_seconds
        # The watches hold their connections for minutes, and the notifier's writes must not
        # wait behind the reconciler's (nor they behind them): a client each.
        api, watch_api, notify_api = [await KubeClient.connect(within=within) for _ in range(3)]
        self._apis = [api, watch_api, notify_api]
        self.connect(KubeWriter(api), KubeWriter(notify_api))
        for informer in self.caches.all:
            informer.api = watch_api
        self._tasks = [asyncio.create_task(i.run()) for i in self.caches.all]
        self._tasks.append(asyncio.create_task(self._start_acting(api)))

    async def _start_acting(self, api: KubeClient) -> None:
        """Once every cache has listed: leader election (or lead at once) and the runnables."""
        await asyncio.gather(*(i.synced.wait() for i in self.caches.all))
        log.info(
            "caches filled: %d ExportJobs, %d Jobs, %d pods",
            *(len(i.items) for i in self.caches.all),
        )
        s = self.settings
        runnables: list[Coroutine[Any, Any, None]] = [
            self.admission.run(self.leading),
            *(self.recorder.run() for _ in range(EVENT_POSTERS)),
            *(
                run_worker(
                    self.queue,
                    self.reconciler.reconcile,
                    on_error=self._on_error,
                    gate=self.leading,
                )
                for _ in range(s.api.workers)
            ),
            *(
                run_worker(self.notifier.queue, self.notifier.reconcile, gate=self.leading)
                for _ in range(s.notify.concurrency)
            ),
        ]
        if s.process.standalone:
            self.start_leading()
            self.leading.set()
        else:
            leader = LeaderElector.of(s, api, on_started=self.start_leading, leading=self.leading)
            runnables.append(self._elect(leader))
        self._tasks += [asyncio.create_task(c) for c in runnables]

    async def _elect(self, leader: LeaderElector) -> None:
        try:
            await leader.run()
        finally:  # cancelled by stop(): hand the Lease over
            await leader.release()

    async def stop(self) -> None:
        """Stop the workers and runnables, hand the Lease over, close the API clients. The keys
        in hand finish first: a callback sent must have its state written before the Lease
        goes, or the next leader sends it again."""
        self.queue.shut_down()
        self.notifier.queue.shut_down()
        self.recorder.stop()
        in_hand = asyncio.gather(self.queue.wait_idle(), self.notifier.queue.wait_idle())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(in_hand, STOP_GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connect(None)
        for api in self._apis:
            await api.close()
        self._apis = []

    def start_leading(self) -> None:
        """Called on (re)gaining the lead: forget what another leader may have changed
        meanwhile and look at every ExportJob again."""
        self.reconciler.reset()
        self.admission.reset()
        for key in list(self.caches.exports.items):
            self.queue.add(key)
        self.notifier.replay()

    def _on_error(self, key: Key, exc: BaseException, delay: float) -> None:
        failures = self.queue.failures(key)
        if isinstance(exc, JobCreateError):
            metrics.RECONCILE_ERRORS.labels("create_job").inc()
        elif isinstance(exc, KubeError):
            metrics.RECONCILE_ERRORS.labels("write").inc()
        else:
            log.error("reconcile of %s/%s failed", *key, exc_info=exc)
            return
        if failures == 1 or failures % 10 == 0:  # the first and then every tenth: no log floods
            log.warning("%s/%s: %s (attempt %d, retry in %.1fs)", *key, exc, failures, delay)

    # -- event handlers: watch events become keys ----------------------------------------------
    def _on_export(
        self, event_type: str | None, view: ExportView, old: ExportView | None, body: Any
    ) -> None:
        key = view.key
        if event_type == "DELETED":
            self.reconciler.forget(view)
            self.admission.release(key)
            self.queue.discard(key)  # its timers and failures; the reconcile below still runs
            self.admission.kick()
        elif event_type in (None, "ADDED") or view.cancel_requested or view.finished:
            self.admission.kick()  # new, cancelled or finished: the queue changes
        self.queue.add(key)

    def _on_job(self, event_type: str | None, job: JobView, old: JobView | None, body: Any) -> None:
        if not job.export_name:
            return
        key = (job.namespace, job.export_name)
        if event_type == "DELETED" and job.name == job_name_for(job.export_name) and job.ending:
            self.reconciler.job_deleted(key, job)
        if job.finished or job.deleting or event_type == "DELETED":
            self.admission.kick()  # a slot may have freed
        self.queue.add(key)

    def _on_pod(self, event_type: str | None, pod: PodView, old: PodView | None, body: Any) -> None:
        if not pod.export_name or (event_type == "MODIFIED" and pod == old):
            return  # nothing the controller reads has changed (most pod updates)
        self.queue.add((pod.namespace, pod.export_name))
