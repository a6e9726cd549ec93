"""Admission: which waiting ExportJobs get a Job now, and where the others stand in line.

`plan_admission` is pure and reads only the cluster state (the ExportJobs and Jobs the informers
show, plus the keys this process admitted whose Job is not shown yet), so a restarted operator
plans the same queue: nothing is lost and nothing is admitted twice. The order comes from an
`AdmissionPolicy`: the manager gives `FairShare` (fair between owners, first in first out by
submission within each); `Fifo` (submission time, then namespace and name) unless one is given.

`Admission` holds the only state of it: the keys admitted whose Job is not created yet, the Jobs
created but not yet seen by the watch ("expectations", client-go's word), and the queue positions
of the last pass. A pass runs when something may have changed (`kick()`): new, cancelled or
finished ExportJobs, a Job that ended. It only marks keys and enqueues them: their reconcile
creates the Job or writes the position.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from export_operator.controller import metrics
from export_operator.controller.snapshots import ExportView, JobView
from export_operator.controller.split_plan import slots_granted
from export_operator.controller.workqueue import WorkQueue
from export_operator.informer import Informer, Key
from export_operator.resource import Phase, job_name_for

log = logging.getLogger(__name__)

EXPECTATION_TIMEOUT = 120.0
"""Seconds after which a created-but-unseen Job stops being expected (the watch lost it)."""
BATCH_DELAY = 0.1
"""Seconds a pass waits for more kicks, so a burst is planned in few passes."""
CPU_SHARE = 0.25
"""At most this share of the time goes to passes: with a long backlog they come less often (and
admit more each); docs/benchmarks.md has what a pass costs."""


class AdmissionPolicy(Protocol):
    """Who gets the free slots: the waiting ExportJobs in the order they are admitted."""

    def order(
        self, waiting: Sequence[ExportView], *, holding: Sequence[ExportView]
    ) -> list[ExportView]:
        """`waiting` in admission order; the first free ones are admitted, the rest numbered.

        `holding`: the ExportJobs whose Job holds a slot now (e.g. to count slots per owner).
        """
        ...


class Fifo:
    """First in, first out: when the webhook accepted it (else the creation time), then namespace
    and name."""

    def order(
        self, waiting: Sequence[ExportView], *, holding: Sequence[ExportView]
    ) -> list[ExportView]:
        return sorted(waiting, key=lambda e: e.queue_order)


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerShare:
    """One owner's share of the slots: `weight` slots for every one of a weight-1 owner, at
    most `max_running` at once (None: no cap of its own)."""

    weight: int = 1
    max_running: int | None = None


class FairShare:
    """Fair between owners (`spec.owner`), first in, first out within each.

    The next slot goes to the owner with the fewest slots for its weight (holding and already
    ordered ones counted), ties to the one admitted least recently, then to the one whose next
    export was submitted first; an owner at
    its `max_running` gets no more until one of its exports ends (its others wait at the end
    of the line). So one owner's 2,000 queued exports do not keep another's first export
    waiting: it gets the next free slot. Exports without an owner share one.
    """

    def __init__(self, shares: Mapping[str, OwnerShare] | None = None) -> None:
        self.shares = dict(shares or {})
        self._turns: dict[str, int] = {}
        """Owner → when it was last admitted (a counter): between owners holding as many slots
        for their weight, the one admitted least recently goes first (round-robin)."""
        self._turn = 0

    def admitted(self, exports: Sequence[ExportView]) -> None:
        """Note the owners just admitted (Admission calls it after each pass)."""
        for export in exports:
            self._turn += 1
            self._turns[export.owner] = self._turn

    def share(self, owner: str) -> OwnerShare:
        return self.shares.get(owner) or OwnerShare()

    def order(
        self, waiting: Sequence[ExportView], *, holding: Sequence[ExportView]
    ) -> list[ExportView]:
        lines: dict[str, list[ExportView]] = {}
        for export in sorted(waiting, key=lambda e: e.queue_order):
            lines.setdefault(export.owner, []).append(export)
        served: dict[str, int] = {}
        for export in holding:
            served[export.owner] = served.get(export.owner, 0) + 1
        turns = dict(self._turns)
        turn = self._turn
        heap: list[tuple[float, int, tuple[int, str, str], str]] = []
        for owner, line in lines.items():
            entry = (self._load(owner, served), turns.get(owner, -1), line[0].queue_order, owner)
            heapq.heappush(heap, entry)
        heads = dict.fromkeys(lines, 0)
        ordered: list[ExportView] = []
        capped: list[ExportView] = []
        while heap:
            *_, owner = heapq.heappop(heap)
            line = lines[owner]
            cap = self.share(owner).max_running
            if cap is not None and served.get(owner, 0) >= cap:
                capped += line[heads[owner] :]
                continue
            ordered.append(line[heads[owner]])
            heads[owner] += 1
            served[owner] = served.get(owner, 0) + 1
            turn += 1
            turns[owner] = turn
            if heads[owner] < len(line):
                order = line[heads[owner]].queue_order
                heapq.heappush(heap, (self._load(owner, served), turns[owner], order, owner))
        return ordered + sorted(capped, key=lambda e: e.queue_order)

    def _load(self, owner: str, served: Mapping[str, int]) -> float:
        return served.get(owner, 0) / self.share(owner).weight


@dataclasses.dataclass(frozen=True, slots=True)
class AdmissionPlan:
    admit: list[ExportView]
    """Admit now, in the policy's order."""
    positions: dict[Key, int]
    """1-based queue positions of the ExportJobs left waiting."""
    running: int
    """Slots held (Jobs' pods at once) before this plan."""
    slots: dict[Key, int] = dataclasses.field(default_factory=dict)
    """The slots granted to each admitted split export (absent: one)."""


def waits_for_job(export: ExportView) -> bool:
    """Whether an ExportJob still needs its Job (not finished, cancelled, deleted or started)."""
    if export.deleting or export.cancel_requested or export.finished:
        return False
    return not export.job_name


def plan_admission(
    *,
    exports: Iterable[ExportView],
    jobs: Mapping[Key, JobView],
    in_flight: Collection[Key],
    max_running: int,
    policy: AdmissionPolicy | None = None,
    holding: Sequence[ExportView] = (),
    wants: Callable[[ExportView], int] | None = None,
    granted: Mapping[Key, int] | None = None,
    busy: int = 0,
) -> AdmissionPlan:
    """Split the waiting ExportJobs into those admitted now and those queued.

    Args:
        exports: every ExportJob the operator watches.
        jobs: their Jobs by (namespace, ExportJob name).
        in_flight: keys admitted whose Job is not shown yet (being created, its create being
            retried, or created and not yet seen): they hold a slot.
        max_running: the concurrency limit; 0 = none.
        policy: the order of admission (default `Fifo`).
        holding: the ExportJobs holding a slot, for the policy.
        wants: how many pods an ExportJob would run at once (a split export's ranges); it
            gets them within the free slots, one when fewer than two are free (split_plan).
        granted: the slots of in-flight keys (absent: one).
        busy: slots held by Jobs other than the ExportJobs' own (a split export finishing).
    """
    granted = granted or {}
    running = busy + sum(job.slots for job in jobs.values() if job.occupies_slot)
    running += sum(granted.get(key, 1) for key in in_flight if key not in jobs)
    candidates = [
        e for e in exports if waits_for_job(e) and e.key not in jobs and e.key not in in_flight
    ]
    waiting = (policy or Fifo()).order(candidates, holding=holding)
    free = None if max_running == 0 else max(0, max_running - running)
    admit: list[ExportView] = []
    slots: dict[Key, int] = {}
    for export in waiting:
        if free is not None and free <= 0:
            break
        got = slots_granted(wants(export), free) if wants is not None else 1
        admit.append(export)
        if got > 1:
            slots[export.key] = got
        free = None if free is None else free - got
    positions = {e.key: i for i, e in enumerate(waiting[len(admit) :], start=1)}
    return AdmissionPlan(admit=admit, positions=positions, running=running, slots=slots)


class Admission:
    """The admission passes and their state (see the module docstring)."""

    def __init__(
        self,
        *,
        exports: Informer[ExportView],
        jobs: Informer[JobView],
        queue: WorkQueue[Key],
        max_running: int,
        policy: AdmissionPolicy,
        wants: Callable[[ExportView], int],
    ) -> None:
        self._exports = exports
        self._jobs = jobs
        self._queue = queue
        self._max_running = max_running
        self.fresh: Callable[[ExportView], ExportView] = lambda e: e
        """The snapshot with what this process last wrote (the manager sets the reconciler's)."""
        self.policy = policy
        self._wants = wants
        """How many pods an ExportJob would run at once (split_plan)."""
        self._admitted: set[Key] = set()
        self._granted: dict[Key, int] = {}
        """Slots granted to admitted split exports until their Job is seen."""
        self._expected: dict[Key, float] = {}
        self.positions: dict[Key, int] = {}
        """Queue positions of the last pass."""
        self._kicked = asyncio.Event()

    # -- what the reconciler asks and tells ------------------------------------------------------
    def take_slot(self, key: Key) -> bool:
        """Whether `key` may create its Job now (without a limit it takes a slot at once: no
        need to wait for a pass)."""
        if self._max_running == 0:
            self._admitted.add(key)
        return key in self._admitted

    def granted(self, export: ExportView) -> int:
        """The slots `export` may use (its ranges Job's parallelism when 2 or more)."""
        if self._max_running == 0:
            return self._wants(export)
        return self._granted.get(export.key, 1)

    def holds_slot(self, key: Key) -> bool:
        """Whether `key` was admitted and its Job is not shown yet."""
        return key in self._admitted

    def in_flight(self, key: Key) -> bool:
        """Whether this process created the Job of `key` and the watch has not shown it yet."""
        return key in self._expected

    def created(self, key: Key) -> None:
        """The Job of `key` was created (or found existing): expect it in the watch (a pass
        after EXPECTATION_TIMEOUT forgets it if the watch never shows it)."""
        self._expected[key] = time.monotonic()
        asyncio.get_running_loop().call_later(EXPECTATION_TIMEOUT + 0.1, self.kick)

    def seen(self, key: Key) -> None:
        """The Job of `key` is in the cache: it holds the slot itself now."""
        self._expected.pop(key, None)
        self._admitted.discard(key)
        self._granted.pop(key, None)

    def release(self, key: Key) -> None:
        """`key` finished or is gone: it holds no slot (as when its Job is seen) and has no place
        in line."""
        self.seen(key)
        self.positions.pop(key, None)

    def creating(self) -> bool:
        """Whether admitted keys still wait for their Job create."""
        return any(k not in self._expected for k in self._admitted)

    def reset(self) -> None:
        """Forget the slots (on gaining the lead: another leader may have changed them)."""
        self._admitted.clear()
        self.positions.clear()
        self.kick()

    # -- the passes ------------------------------------------------------------------------------
    def kick(self) -> None:
        """Ask for a pass."""
        self._kicked.set()

    async def run(self, leading: asyncio.Event) -> None:
        """Run a pass after each kick, while this replica leads."""
        took = 0.0
        while True:
            await self._kicked.wait()
            await asyncio.sleep(max(BATCH_DELAY, took / CPU_SHARE - took))
            await leading.wait()
            self._kicked.clear()
            started = time.monotonic()
            try:
                self.admit_once()
            except Exception:  # one bad pass must not stop admission for good
                log.exception("admission pass failed")
                await asyncio.sleep(1.0)
                self.kick()
            took = time.monotonic() - started

    def admit_once(self) -> None:
        """One pass: mark the head of the queue admitted, number the rest; enqueue the keys
        whose place changed (their reconcile creates the Job or writes the position)."""
        jobs: dict[Key, JobView] = {}
        busy = 0
        for job in self._jobs.items.values():
            if job.export_name and job.name == job_name_for(job.export_name):
                jobs[(job.namespace, job.export_name)] = job
            elif job.step and job.occupies_slot:
                busy += job.slots  # a split export's finishing step
        expiry = time.monotonic() - EXPECTATION_TIMEOUT
        for key, since in list(self._expected.items()):
            if key in jobs or since < expiry:
                del self._expected[key]
        waiting = [v for v in map(self.fresh, self._exports.items.values()) if waits_for_job(v)]
        waiting = [v for v in waiting if v.key not in jobs]
        self._admitted &= {e.key for e in waiting}
        self._granted = {k: n for k, n in self._granted.items() if k in self._admitted}
        in_flight = self._admitted | self._expected.keys()
        holding = self._holding(jobs, in_flight)
        plan = plan_admission(
            exports=waiting,
            jobs=jobs,
            in_flight=in_flight,
            max_running=self._max_running,
            policy=self.policy,
            holding=holding,
            wants=self._wants,
            granted=self._granted,
            busy=busy,
        )
        log.debug("admission pass: %d admitted, %d queued", len(plan.admit), len(plan.positions))
        if isinstance(self.policy, FairShare):
            self.policy.admitted(plan.admit)
        self._granted.update(plan.slots)
        for export in plan.admit:  # the urgent lane: Job creations first, in admission order
            self._admitted.add(export.key)
            self._queue.add(export.key, urgent=True)
        metrics.QUEUE_DEPTH.set(len(plan.positions))
        metrics.RUNNING_JOBS.set(plan.running + sum(plan.slots.get(e.key, 1) for e in plan.admit))
        owners = {e.key: e.owner for e in waiting}
        metrics.QUEUE_DEPTH_BY_OWNER.set(Counter(owners[k] for k in plan.positions))
        metrics.RUNNING_JOBS_BY_OWNER.set(Counter(e.owner for e in [*holding, *plan.admit]))
        phases = {e.key: e.phase_value for e in waiting}
        previous, self.positions = self.positions, plan.positions
        for key in plan.positions:
            # Entering the queue: its reconcile writes Queued and the position. A mere shift of
            # an ExportJob already queued is not written (see Reconciler.reconcile).
            if key not in previous and phases[key] != Phase.QUEUED.value:
                self._queue.add(key)

    def _holding(self, jobs: Mapping[Key, JobView], in_flight: Collection[Key]) -> list[ExportView]:
        """The ExportJobs holding a slot (for the policy and the per-owner figures)."""
        keys = [k for k, j in jobs.items() if j.occupies_slot] + list(in_flight)
        return [e for e in map(self._exports.get, keys) if e is not None]
