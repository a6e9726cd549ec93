"""The admission queue: which waiting ExportJobs get a Job now, and where the others stand.

Pure and derived from the cluster state only (the ExportJobs and Jobs the watches show, plus the
ExportJobs this process admitted whose Job the watch has not shown yet), so a restarted operator
rebuilds the same queue: nothing is lost and nothing is admitted twice. Order: first in, first
out by `creationTimestamp`, ties broken by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from export_operator.controller.views import ExportView, JobView

Key = tuple[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class AdmissionPlan:
    admit: list[ExportView]
    """Admit now, oldest first."""
    positions: dict[Key, int]
    """1-based queue positions of the ExportJobs left waiting."""
    running: int
    """Jobs counting against the limit before this plan."""


def waits_for_job(export: ExportView) -> bool:
    """Whether an ExportJob still needs its Job (not finished, cancelled, deleted or started)."""
    if export.deleting or export.cancel_requested or export.finished:
        return False
    return not export.job_name


def queue_order(exports: Iterable[ExportView]) -> list[ExportView]:
    """First in, first out: creation time, then name (timestamps have one-second resolution)."""
    return sorted(exports, key=lambda e: e.queue_order)


def plan_admission(
    *,
    exports: Iterable[ExportView],
    jobs: Mapping[Key, JobView],
    in_flight: Collection[Key],
    max_running: int,
) -> AdmissionPlan:
    """Split the waiting ExportJobs into those admitted now and those queued.

    Args:
        exports: every ExportJob the operator watches.
        jobs: their Jobs by (namespace, ExportJob name).
        in_flight: keys admitted whose Job is not shown yet (being created, its create being
            retried, or created and not yet seen): they hold a slot.
        max_running: the concurrency limit; 0 = none.
    """
    running = sum(1 for job in jobs.values() if job.occupies_slot)
    running += sum(1 for key in in_flight if key not in jobs)
    waiting = queue_order(
        e for e in exports if waits_for_job(e) and e.key not in jobs and e.key not in in_flight
    )
    free = len(waiting) if max_running == 0 else max(0, max_running - running)
    admit = waiting[:free]
    positions = {e.key: i for i, e in enumerate(waiting[free:], start=1)}
    return AdmissionPlan(admit=admit, positions=positions, running=running)
