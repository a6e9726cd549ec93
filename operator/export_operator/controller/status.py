"""The status an ExportJob should have, derived from its Job, its pods and the queue.

`decide()` is pure and level-based: it reads what the cluster shows now (plus the status already
written) and returns the whole operator-owned part of `status`, whether the Job must go, and the
phase transition (for Events and metrics). Finished phases are sticky.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from export_operator.controller.outcomes import (
    ExportError,
    ProcessorResult,
    classify_job_failure,
    result_from_pods,
    watchdog_failure,
)
from export_operator.controller.views import ExportView, JobView, PodView, format_time
from export_operator.resource import ConditionType, ErrorCode, Phase, job_name_for

OWNED_FIELDS = (
    "phase",
    "conditions",
    "jobName",
    "attempts",
    "startTime",
    "completionTime",
    "queuePosition",
    "result",
    "error",
    "observedGeneration",
)
"""The status fields the operator writes; `progress` belongs to the processor."""

PENDING_MESSAGE = "the Job was created; waiting for its pod to run"

_FINISH_CONDITION = {
    Phase.SUCCEEDED: ConditionType.SUCCEEDED,
    Phase.FAILED: ConditionType.FAILED,
    Phase.CANCELLED: ConditionType.CANCELLED,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one ExportJob."""

    status: dict[str, Any]
    """The desired operator-owned status fields (absent key = field should be absent)."""
    phase: Phase
    transition: bool
    """Whether the phase differs from the one already written."""
    message: str
    """A human sentence about the phase, for the Event and the condition."""
    delete_job: bool = False
    awaiting_admission: bool = False
    """New and not yet admitted or queued: the admission pass decides, nothing to write yet."""
    result: ProcessorResult | None = None
    error: ExportError | None = None
    waiting: Waiting | None = None
    """Set when the Job create was refused: the status says why, the reconcile retries."""


@dataclasses.dataclass(frozen=True, slots=True)
class Watchdog:
    unschedulable_timeout: float
    image_pull_timeout: float
    start_timeout: float = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class Waiting:
    """Why an admitted ExportJob has no Job yet: its create was refused (retried with backoff)."""

    reason: str
    """`QuotaExceeded`, `Forbidden`, `APIUnavailable` or `CreateFailed`."""
    message: str


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: ConditionType,
    status: str,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """The conditions with one set (metav1.Condition semantics: the transition time moves only
    when the status changes), in the stable order of `ConditionType`."""
    by_type = {str(c.get("type")): dict(c) for c in conditions}
    previous = by_type.get(type_.value)
    since = (
        previous["lastTransitionTime"]
        if previous is not None and previous.get("status") == status
        else format_time(now)
    )
    by_type[type_.value] = {
        "type": type_.value,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    order = [t.value for t in ConditionType]
    return [by_type[t] for t in order if t in by_type] + [
        c for t, c in by_type.items() if t not in order
    ]


def _conditions_for(
    *,
    previous: Sequence[Mapping[str, Any]],
    phase: Phase,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    def put(
        conds: list[dict[str, Any]], type_: ConditionType, status: str, why: str, text: str
    ) -> list[dict[str, Any]]:
        return set_condition(
            conds,
            type_=type_,
            status=status,
            reason=why,
            message=text,
            now=now,
            generation=generation,
        )

    present = {str(c.get("type")) for c in previous}
    conds = [dict(c) for c in previous]
    if reason == ErrorCode.INVALID_SPEC:
        conds = put(conds, ConditionType.ACCEPTED, "False", "InvalidSpec", message)
    else:
        conds = put(conds, ConditionType.ACCEPTED, "True", "Accepted", "the export was accepted")
    if phase is Phase.QUEUED:
        conds = put(conds, ConditionType.QUEUED, "True", reason, message)
    elif ConditionType.QUEUED.value in present:
        why = "Admitted" if phase in (Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED) else str(phase)
        conds = put(conds, ConditionType.QUEUED, "False", why, "left the queue")
    if phase is Phase.RUNNING:
        conds = put(conds, ConditionType.RUNNING, "True", "PodRunning", message)
    elif ConditionType.RUNNING.value in present or phase.finished:
        why = "PodPending" if phase is Phase.PENDING else str(phase.value)
        conds = put(conds, ConditionType.RUNNING, "False", why, message)
    finish = _FINISH_CONDITION.get(phase)
    if finish is not None:
        conds = put(conds, finish, "True", reason, message)
    return conds


def decide(
    *,
    export: ExportView,
    current: Mapping[str, Any],
    job: JobView | None,
    pods: Sequence[PodView],
    job_in_flight: bool,
    queue_position: int | None,
    invalid_spec: str | None,
    now: dt.datetime,
    watchdog: Watchdog,
    waiting: Waiting | None = None,
) -> Decision:
    """The desired status of `export`.

    Args:
        export: the ExportJob as last seen.
        current: its status as last written (the freshest known; may be newer than `export`).
        job: its Job, if the cluster shows one.
        pods: its processor pods.
        job_in_flight: the Job was just created and the watch has not shown it yet (it exists).
        queue_position: its 1-based position when the admission queue holds it.
        invalid_spec: why the spec can never run, if it cannot.
        waiting: why the Job of an admitted ExportJob could not be created (retried).
        now: the current time.
        watchdog: the limits for pods stuck before they run.
    """
    raw_phase = current.get("phase")
    current_phase = Phase(raw_phase) if raw_phase in set(Phase) else None
    base = {k: current[k] for k in OWNED_FIELDS if k in current}
    base["observedGeneration"] = export.generation

    if current_phase is not None and current_phase.finished:
        # Finished is final. Only fill in a result the pod watch delivered late.
        status = dict(base)
        result = None
        if current_phase is Phase.SUCCEEDED and "result" not in status:
            result = result_from_pods(pods)
            if result is not None:
                status["result"] = result.as_status()
        return Decision(
            status=status,
            phase=current_phase,
            transition=False,
            message="",
            # A Job still going although the export ended here (cancel, watchdog): it goes. One
            # the job controller is already ending (FailureTarget) is left to finish.
            delete_job=job is not None and job.occupies_slot and not job.ending,
            result=result,
        )

    def conditions(phase: Phase, reason: str, message: str) -> list[dict[str, Any]]:
        return _conditions_for(
            previous=current.get("conditions") or [],
            phase=phase,
            reason=reason,
            message=message,
            now=now,
            generation=export.generation,
        )

    def finish(
        phase: Phase,
        *,
        reason: str,
        message: str,
        error: ExportError | None = None,
        result: ProcessorResult | None = None,
        completed: dt.datetime | None = None,
        delete_job: bool = False,
    ) -> Decision:
        status = dict(base)
        status.pop("queuePosition", None)
        status["phase"] = phase.value
        status["completionTime"] = status.get("completionTime") or format_time(completed or now)
        if error is not None:
            status["error"] = error.as_status()
        if result is not None:
            status["result"] = result.as_status()
        status["conditions"] = conditions(phase, reason, message)
        return Decision(
            status=status,
            phase=phase,
            transition=phase is not current_phase,
            message=message,
            delete_job=delete_job,
            result=result,
            error=error,
        )

    def ongoing(phase: Phase, *, reason: str, message: str) -> Decision:
        status = dict(base)
        status["phase"] = phase.value
        if phase is not Phase.QUEUED:
            status.pop("queuePosition", None)
        status["conditions"] = conditions(phase, reason, message)
        return Decision(
            status=status, phase=phase, transition=phase is not current_phase, message=message
        )

    def record_attempts() -> None:
        # Only once a pod runs or the Job ended: while the Job merely waits for its pod, these
        # would cost a status patch per Job status change for nothing a user needs.
        if job is None:
            return
        attempts = max(int(base.get("attempts") or 0), job.failed + job.succeeded + job.active)
        attempts = max(attempts, len(pods))
        if attempts:
            base["attempts"] = attempts
        if job.start_time is not None and "startTime" not in base:
            base["startTime"] = format_time(job.start_time)

    if job is not None:
        base["jobName"] = job.name
        if job.finished or job.failed_condition is not None:
            record_attempts()

    if job is not None and job.complete:
        result = result_from_pods(pods)
        if result is not None:
            text = f"wrote {result.uri} ({result.rows} rows, {result.bytes} bytes)"
        else:
            text = "the export succeeded"
        return finish(
            Phase.SUCCEEDED,
            reason="Completed",
            message=text,
            result=result,
            completed=job.completion_time,
        )
    failed_condition = job.failed_condition if job is not None else None
    if job is not None and failed_condition is not None:
        error = classify_job_failure(job=job, condition=failed_condition, pods=pods)
        return finish(
            Phase.FAILED,
            reason=error.code,
            message=error.message,
            error=error,
            completed=failed_condition.last_transition,
        )
    if export.cancel_requested:
        # A cancel that lost the race to completion: the processor wrote its output and exited 0
        # before the job controller marked the Job Complete. It ends Succeeded with its result,
        # so the output is not left in S3 with nothing pointing to it (docs/api.md, "Reading
        # and cancelling").
        won = result_from_pods(p for p in pods if p.exit_code == 0)
        if won is not None:
            return finish(
                Phase.SUCCEEDED,
                reason="Completed",
                message=f"wrote {won.uri} ({won.rows} rows, {won.bytes} bytes); the cancel "
                "came after the export had finished",
                result=won,
                completed=max((p.finished_at for p in pods if p.finished_at), default=None),
            )
        error = ExportError(ErrorCode.CANCELLED, "cancelled by spec.cancel", retryable=False)
        return finish(
            Phase.CANCELLED,
            reason="Cancelled",
            message=error.message,
            error=error,
            delete_job=job is not None and not job.deleting,
        )
    if invalid_spec is not None:
        error = ExportError(ErrorCode.INVALID_SPEC, invalid_spec, retryable=False)
        return finish(Phase.FAILED, reason=error.code, message=invalid_spec, error=error)
    if job is not None:
        stuck = watchdog_failure(
            pods=pods,
            now=now,
            unschedulable_timeout=watchdog.unschedulable_timeout,
            image_pull_timeout=watchdog.image_pull_timeout,
            start_timeout=watchdog.start_timeout,
        )
        if stuck is not None:
            return finish(
                Phase.FAILED,
                reason=stuck.code,
                message=stuck.message,
                error=stuck,
                delete_job=not job.deleting,
            )
        running = [p for p in pods if p.running and not p.terminated and not p.deleting]
        if running:
            pod = running[0]
            record_attempts()
            if "startTime" not in base and pod.running_since is not None:
                base["startTime"] = format_time(pod.running_since)
            attempt = base.get("attempts", 1)
            return ongoing(
                Phase.RUNNING,
                reason="PodRunning",
                message=f"pod {pod.name} is running (attempt {attempt})",
            )
        done = [p for p in pods if p.exit_code == 0 and not p.deleting]
        if done and current_phase is not Phase.PENDING:
            # The pod finished; the job controller has not marked the Job Complete yet. Still
            # Running: going back to Pending would be a phase transition that never happened.
            # (Still Pending if it was never seen running: one patch less, no flap either.)
            return ongoing(
                Phase.RUNNING,
                reason="PodSucceeded",
                message=f"pod {done[0].name} finished; waiting for the Job to complete",
            )
        live = [p for p in pods if not p.terminated and not p.deleting]
        if current_phase is Phase.RUNNING and not live and any(p.terminated for p in pods):
            # The pod ended and the job controller has not caught up yet (Complete, or a new
            # pod for a retry): still Running, with the same message, so nothing is written.
            running_condition: Mapping[str, Any] = next(
                (c for c in current.get("conditions") or [] if c.get("type") == "Running"), {}
            )
            return ongoing(
                Phase.RUNNING,
                reason="PodRunning",
                message=str(running_condition.get("message") or "the pod finished"),
            )
        return ongoing(Phase.PENDING, reason="JobCreated", message=PENDING_MESSAGE)
    if job_in_flight:
        # The same status as once the watch shows the Job: one patch, not two.
        base["jobName"] = job_name_for(export.name)
        return ongoing(Phase.PENDING, reason="JobCreated", message=PENDING_MESSAGE)
    if current.get("jobName") and current_phase in (Phase.PENDING, Phase.RUNNING):
        error = ExportError(
            ErrorCode.INTERNAL,
            f"Job {current['jobName']} disappeared before it finished",
            retryable=True,
        )
        return finish(Phase.FAILED, reason=error.code, message=error.message, error=error)
    if waiting is not None:
        # Admitted, not in line: no position. Phase Queued, and the condition says why.
        base.pop("queuePosition", None)
        decision = ongoing(Phase.QUEUED, reason=waiting.reason, message=waiting.message)
        return dataclasses.replace(decision, waiting=waiting)
    if queue_position is not None:
        base["queuePosition"] = queue_position
        return ongoing(Phase.QUEUED, reason="WaitingForSlot", message="waiting for a free slot")
    decision = ongoing(Phase.PENDING, reason="Accepted", message="waiting for admission")
    return dataclasses.replace(decision, awaiting_admission=True)


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the owned fields turning `current` into `desired` (None deletes)."""
    patch: dict[str, Any] = {}
    for field in OWNED_FIELDS:
        if field in desired:
            if current.get(field) != desired[field]:
                patch[field] = desired[field]
        elif current.get(field) is not None:
            patch[field] = None
    return patch
