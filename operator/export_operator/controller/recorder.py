"""The event recorder: core/v1 Events about ExportJobs, and "creations first" pacing.

Events are queued and posted by a few background posters, so a reconcile never waits for one.
In a burst the API server's capacity goes to the Job creates first: while Jobs are being created
(admitted ExportJobs wait for their create, or one was created less than `quiet` seconds ago),
status writes that can wait (not final ones) and Events wait, for at most `CREATIONS_FIRST_MAX`
seconds in a row. A held status write is the key's reconcile: `hold(key)` keeps the key and puts
it back in the work queue once the creations are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from export_operator import resource
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.snapshots import ExportView, format_time
from export_operator.controller.workqueue import WorkQueue
from export_operator.informer import Key
from export_operator.kube import KubeError

log = logging.getLogger(__name__)

CREATIONS_FIRST_MAX = 15.0
"""Seconds at most that status writes (not final ones) and Events wait while Jobs are created."""
CREATIONS_QUIET = 1.0
"""Seconds without a Job create after which a burst counts as over (the held writes go)."""
CHECK_INTERVAL = 0.05
"""Seconds an answer of `creations_first()` is reused (it scans the admitted keys)."""
POLL = 0.5
"""Seconds between two looks of a poster at whether the creations are done."""
MAX_QUEUED = 10000
"""Events queued at most; beyond, new ones are dropped (Events are informative)."""
COMPONENT = "exportjobs-operator"
INSTANCE = socket.gethostname()[:128]


def event_about(
    export: ExportView, *, type_: str, reason: str, message: str, now: dt.datetime
) -> dict[str, Any]:
    """A core/v1 Event about an ExportJob (shown by `kubectl describe`)."""
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{export.name}.", "namespace": export.namespace},
        "involvedObject": {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "name": export.name,
            "namespace": export.namespace,
            "uid": export.uid,
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": f"{resource.GROUP}/operator",
        "reportingInstance": INSTANCE,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Posts Events in the background and paces writes behind Job creations."""

    def __init__(
        self,
        *,
        queue: WorkQueue[Key],
        creating: Callable[[], bool],
        clock: Callable[[], dt.datetime],
        quiet: float = CREATIONS_QUIET,
    ) -> None:
        self.writer: KubeWriter | None = None
        """Where Events go (set when the manager has opened its API client)."""
        self._queue = queue
        self._creating = creating
        self._clock = clock
        self._quiet = quiet
        self._last_create = 0.0
        self._since: float | None = None
        self._checked = 0.0
        self._held: set[Key] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_QUEUED)

    # -- pacing ----------------------------------------------------------------------------------
    def job_created(self) -> None:
        """A Job create was sent: a burst is on for at least `quiet` seconds."""
        self._last_create = time.monotonic()

    def hold(self, key: Key) -> bool:
        """Whether a status write of `key` that can wait must wait; if so `key` is queued again
        once the creations are over."""
        if not self.creations_first():
            return False
        self._held.add(key)
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self._quiet + 0.1, self._flush_held)
        return True

    def creations_first(self) -> bool:
        """Whether Jobs are being created (for at most CREATIONS_FIRST_MAX seconds in a row)."""
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL:
            return self._since is not None and now - self._since < CREATIONS_FIRST_MAX
        self._checked = now
        if now - self._last_create >= self._quiet and not self._creating():
            self._since = None
            for key in self._held:
                self._queue.add(key)
            self._held.clear()
            return False
        if self._since is None:
            self._since = now
        return now - self._since < CREATIONS_FIRST_MAX

    def _flush_held(self) -> None:
        """Look again whether the held writes can go (no event may come to ask)."""
        self._flush = None
        self._checked = 0.0
        if self.creations_first() and self._held:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self._quiet + 0.1, self._flush_held)

    # -- Events ----------------------------------------------------------------------------------
    def post(self, export: ExportView, type_: str, reason: str, message: str) -> None:
        """Queue an Event about `export` (dropped when the queue is full)."""
        event = event_about(export, type_=type_, reason=reason, message=message, now=self._clock())
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(event)

    async def run(self) -> None:
        """One poster: post queued Events, each once the creations are over."""
        while True:
            event = await self._events.get()
            while self.creations_first():  # noqa: ASYNC110 - a bounded poll, no event to wait on
                await asyncio.sleep(POLL)
            await self._send(event)

    async def drain(self) -> None:
        """Post every queued Event now, paced or not (tests; a clean shutdown)."""
        while not self._events.empty():
            await self._send(self._events.get_nowait())

    async def _send(self, event: dict[str, Any]) -> None:
        if self.writer is None:
            return
        try:
            await self.writer.post_event(event)
        except KubeError as exc:
            log.debug("event not posted: %s", exc)

    def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
