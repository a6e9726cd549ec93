"""The status of a split export: one phase over its steps, and its progress summed.

`SPLIT_RULES` take the place of `status.RULES` when the ExportJob's Job is a ranges Job (or
another step's Job exists): the outcome is the finishing step's, a range that failed is the
finishing step's to convert again (`RangesFailed` condition, not a failure), and the phase
moves Pending (preparing) → Running (ranges, then finishing) → Succeeded, Failed or Cancelled,
with few status writes (the Running message is the same for every range). `summed_progress`
adds up the ranges' `status.progress.ranges` into the export's own figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from export_operator.controller.outcomes import ExportError
from export_operator.controller.snapshots import JobView, PodView, format_time
from export_operator.controller.split_jobs import FINISHED_INDEXES
from export_operator.controller.status import (
    Observed,
    Rule,
    Verdict,
    _create_refused,
    _invalid,
    _job_pending,
    _result_or_none,
    _stuck,
    cancelled,
    completed,
    failed,
    failure,
)
from export_operator.resource import ConditionType, ErrorCode, Phase


def is_split(job: JobView | None, steps: Mapping[str, JobView]) -> bool:
    """Whether these Jobs are a split export's."""
    return bool(steps) or (job is not None and job.step == "ranges")


def _pods(o: Observed, *steps: str) -> list[PodView]:
    return [p for p in o.pods if p.step in steps]


def _finished(o: Observed) -> Verdict | None:
    """The finishing step's outcome is the export's."""
    finish = o.steps.get("finish")
    if finish is None:
        return None
    if finish.complete:
        return completed(finish, _pods(o, "finish"))
    if finish.failed_condition is not None:
        return failed(finish, _pods(o, "finish"))
    return None


def _step_failed(o: Observed) -> Verdict | None:
    """The upload could not be prepared, or the ranges failed for good (deadline, source
    missing): failed indexes alone are not a failure."""
    prepare = o.steps.get("prepare")
    if prepare is not None and prepare.failed_condition is not None:
        verdict = failed(prepare, _pods(o, "prepare"), "preparing the split export")
        # The ranges Job, suspended, would hold its slots until deleted.
        live = o.job is not None and o.job.occupies_slot
        return dataclasses.replace(verdict, delete_job=live)
    job = o.job
    condition = job.failed_condition if job is not None else None
    if job is None or condition is None or condition.reason in FINISHED_INDEXES:
        return None
    return failed(job, _pods(o, "ranges"))


def _cancelled(o: Observed) -> Verdict | None:
    if not o.export.cancel_requested:
        return None
    won = _result_or_none(p for p in _pods(o, "finish") if p.exit_code == 0)
    return cancelled(o, won, None)


def _stuck_pods(o: Observed) -> Verdict | None:
    return _stuck(dataclasses.replace(o, pods=_pods(o, "prepare", "ranges", "finish")))


def ranges_done(job: JobView) -> bool:
    """Whether the ranges Job is over and the finishing step's turn has come."""
    condition = job.failed_condition
    return job.complete or (condition is not None and condition.reason in FINISHED_INDEXES)


def _running(o: Observed) -> Verdict | None:
    """Ranges or the finishing step under way: Running, with one message for all of it."""
    job = o.job
    if job is None:
        return None
    live = [p for p in _pods(o, "ranges", "finish") if p.running and not p.deleting]
    finishing = "finish" in o.steps or ranges_done(job)
    if not live and not finishing and o.current_phase is not Phase.RUNNING:
        return None  # (Running stays Running between one range's end and the next's start)
    fields: dict[str, Any] = {}
    started = [p.container.running_since for p in live if p.container.running_since]
    if "startTime" not in o.current and started:
        fields["startTime"] = format_time(min(started))
    if finishing:
        message = f"finishing: one result from {job.ranges} ranges"
    else:
        message = f"converting {job.ranges} ranges, {job.parallelism} at a time"
    return Verdict(Phase.RUNNING, "PodRunning", message, fields, condition=_ranges_failed(job))


def _ranges_failed(job: JobView) -> tuple[ConditionType, str, str, str] | None:
    if not job.failed_indexes:
        return None
    message = (
        f"ranges {job.failed_indexes} failed (each retried up to its backoff limit); the "
        "finishing step converts them again from a verified row boundary"
    )
    return (ConditionType.RANGES_FAILED, "True", "IndexesFailed", message)


def _vanished(o: Observed) -> Verdict | None:
    if o.job is not None or o.steps or o.current_phase not in (Phase.PENDING, Phase.RUNNING):
        return None
    message = "the split export's Jobs disappeared before it finished"
    return failure(ExportError(ErrorCode.INTERNAL, message, retryable=True))


SPLIT_RULES: tuple[Rule, ...] = (
    _finished,
    _step_failed,
    _cancelled,
    _invalid,
    _stuck_pods,
    _running,
    _job_pending,
    _vanished,
    _create_refused,
)


def summed_progress(status: Mapping[str, Any], total: int | None) -> dict[str, Any] | None:
    """The export's progress from its ranges' (`status.progress.ranges`, each range's own
    patches); None when there is nothing new to write."""
    progress = status.get("progress")
    if not isinstance(progress, Mapping) or not isinstance(progress.get("ranges"), Mapping):
        return None
    ranges = [r for r in progress["ranges"].values() if isinstance(r, Mapping)]
    read = sum(int(r.get("bytesRead") or 0) for r in ranges)
    summed: dict[str, Any] = {
        "bytesRead": read,
        "rows": sum(int(r.get("rows") or 0) for r in ranges),
    }
    totals = [r.get("bytesTotal") for r in ranges]
    total = total or (sum(int(t) for t in totals if t) if all(totals) else None)
    if total:
        summed["bytesTotal"] = total
        summed["percent"] = min(100, read * 100 // total)
    if all(progress.get(k) == v for k, v in summed.items()):
        return None
    return summed
