"""The status an ExportJob should have, derived from its Job, its pods and the queue.

`decide()` is pure and level-based: it reads what the cluster shows now (`Observed`: the
snapshots plus the status already written) and returns the whole operator-owned part of
`status`, whether the Job must go, and the phase transition (for Events and metrics). It is a
list of small rules (`RULES`), each `Observed -> Verdict | None`, tried in order; the first that
applies decides, and `_decision` turns its verdict into the status. Finished phases are sticky.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from export_operator.controller.conditions import conditions_after
from export_operator.controller.outcomes import (
    ExportError,
    Waiting,
    Watchdog,
    classify_job_failure,
    protocol_error,
    result_from_pods,
)
from export_operator.controller.snapshots import ExportView, JobView, PodView, format_time
from export_operator.resource import ConditionType, ErrorCode, Phase, job_name_for
from export_operator.termination import ProtocolError, ResultMessage

OWNED_FIELDS: tuple[str, ...] = ("phase", "conditions", "jobName", "attempts", "startTime")
OWNED_FIELDS += ("completionTime", "queuePosition", "result", "error", "observedGeneration")
"""The status fields the operator writes; `progress` belongs to the processor."""

PENDING_MESSAGE = "the Job was created; waiting for its pod to run"
RESULT_WAIT = dt.timedelta(seconds=30)
"""How long a completed Job's export waits for its pod's result in the watch (`_end_not_seen`)."""


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
    result: ResultMessage | None = None
    error: ExportError | None = None
    waiting: Waiting | None = None
    """Set when the Job create was refused: the status says why, the reconcile retries."""


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What the cluster and this process show of one ExportJob: the input of `decide`."""

    export: ExportView
    current: Mapping[str, Any]
    """Its status as last written (the freshest known; may be newer than `export`)."""
    job: JobView | None
    """Its Job, if the cluster shows one."""
    pods: Sequence[PodView]
    now: dt.datetime
    watchdog: Watchdog
    job_in_flight: bool = False
    """The Job was just created and the watch has not shown it yet (it exists)."""
    queue_position: int | None = None
    """Its 1-based position when the admission queue holds it."""
    invalid_spec: str | None = None
    """Why the spec can never run, if it cannot."""
    waiting: Waiting | None = None
    """Why the Job of an admitted ExportJob could not be created (retried)."""
    steps: Mapping[str, JobView] = dataclasses.field(default_factory=dict)
    """A split export's other Jobs by step (`prepare`, `finish`, `clean`)."""

    @property
    def current_phase(self) -> Phase | None:
        raw = self.current.get("phase")
        return Phase(raw) if raw in set(Phase) else None


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule of `decide` concluded: the phase, why, and what goes with it."""

    phase: Phase
    reason: str
    message: str
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Owned status fields set besides phase and conditions (attempts, startTime, ...)."""
    error: ExportError | None = None
    result: ResultMessage | None = None
    completed: dt.datetime | None = None
    delete_job: bool = False
    waiting: Waiting | None = None
    awaiting_admission: bool = False
    condition: tuple[ConditionType, str, str, str] | None = None
    """One more condition to set: (type, status, reason, message)."""


def _attempts(o: Observed) -> dict[str, Any]:
    """Attempts and start time from the Job: recorded only once a pod runs or the Job ended
    (while the Job merely waits for its pod they would cost a patch per Job change)."""
    job = o.job
    assert job is not None
    fields: dict[str, Any] = {}
    attempts = max(
        int(o.current.get("attempts") or 0),
        job.status.failed + job.status.succeeded + job.status.active,
    )
    # A split export's steps (prepare, finish, clean) are not attempts: only its ranges' pods.
    attempts = max(attempts, sum(1 for p in o.pods if p.step in ("", "ranges")))
    if attempts:
        fields["attempts"] = attempts
    if job.status.start_time is not None and "startTime" not in o.current:
        fields["startTime"] = format_time(job.status.start_time)
    return fields


def _wrote(result: ResultMessage) -> str:
    return f"wrote {result.uri} ({result.rows} rows, {result.bytes} bytes)"


def _result_or_none(pods: Iterable[PodView]) -> ResultMessage | None:
    """The pods' result where a malformed one counts as none (a cancel, a late fill-in)."""
    try:
        return result_from_pods(pods)
    except ProtocolError:
        return None


def completed(job: JobView, pods: Sequence[PodView]) -> Verdict:
    """A Complete Job: Succeeded with its pods' result, or Failed when the processor claims
    success in a message the status cannot hold (retrying the patch would be refused for good)."""
    done = job.status.completion_time
    try:
        result = result_from_pods(pods)
    except ProtocolError as exc:
        return failure(protocol_error(exc), completed=done)
    message = _wrote(result) if result is not None else "the export succeeded"
    return Verdict(Phase.SUCCEEDED, "Completed", message, result=result, completed=done)


def failed(job: JobView, pods: Sequence[PodView], what: str = "") -> Verdict:
    """A failed Job (`failed_condition` set): its error, prefixed with `what` when given."""
    condition = job.failed_condition
    assert condition is not None
    error = classify_job_failure(job=job, condition=condition, pods=pods)
    if what:
        error = dataclasses.replace(error, message=f"{what}: {error.message}")
    return failure(error, completed=condition.last_transition)


def failure(error: ExportError, **more: Any) -> Verdict:
    """Failed with `error` (its code the condition's reason, its message the condition's)."""
    return Verdict(Phase.FAILED, error.code, error.message, error=error, **more)


def cancelled(o: Observed, won: ResultMessage | None, done: dt.datetime | None) -> Verdict:
    """Cancelled; or, when the cancel lost the race to completion (the output was written:
    `won`), Succeeded with that result, so the output is not left in S3 with nothing pointing
    to it (docs/api.md, "Reading and cancelling")."""
    if won is not None:
        message = f"{_wrote(won)}; the cancel came after the export had finished"
        return Verdict(Phase.SUCCEEDED, "Completed", message, result=won, completed=done)
    error = ExportError(ErrorCode.CANCELLED, "cancelled by spec.cancel", retryable=False)
    delete = o.job is not None and not o.job.deleting
    return Verdict(Phase.CANCELLED, "Cancelled", error.message, error=error, delete_job=delete)


# -- the rules, in order: the first that applies decides ----------------------------------------
def _job_complete(o: Observed) -> Verdict | None:
    return completed(o.job, o.pods) if o.job is not None and o.job.complete else None


def _job_failed(o: Observed) -> Verdict | None:
    return failed(o.job, o.pods) if o.job is not None and o.job.failed_condition else None


def _cancelled(o: Observed) -> Verdict | None:
    if not o.export.cancel_requested:
        return None
    won = _result_or_none(p for p in o.pods if p.exit_code == 0)
    done = max((p.container.finished_at for p in o.pods if p.container.finished_at), default=None)
    return cancelled(o, won, done)


def _invalid(o: Observed) -> Verdict | None:
    if o.invalid_spec is None:
        return None
    return failure(ExportError(ErrorCode.INVALID_SPEC, o.invalid_spec, retryable=False))


def _stuck(o: Observed) -> Verdict | None:
    if o.job is None:
        return None
    stuck = o.watchdog.failure(o.pods, o.now)
    if stuck is None:
        return None
    return failure(stuck, delete_job=not o.job.deleting)


def _pod_running(o: Observed) -> Verdict | None:
    if o.job is None:
        return None
    running = [p for p in o.pods if p.running and not p.terminated and not p.deleting]
    if not running:
        return None
    pod = running[0]
    fields = _attempts(o)
    if "startTime" not in o.current and "startTime" not in fields and pod.container.running_since:
        fields["startTime"] = format_time(pod.container.running_since)
    attempt = fields.get("attempts", o.current.get("attempts", 1))
    return Verdict(
        Phase.RUNNING, "PodRunning", f"pod {pod.name} is running (attempt {attempt})", fields
    )


def _pod_ended(o: Observed) -> Verdict | None:
    """The pod ended and the job controller has not caught up yet (Complete, or a new pod for
    a retry): no phase moves back, nothing is written that would flap."""
    if o.job is None:
        return None
    done = [p for p in o.pods if p.exit_code == 0 and not p.deleting]
    if done and o.current_phase is not Phase.PENDING:
        # Still Running (never seen running: still Pending, one patch less).
        message = f"pod {done[0].name} finished; waiting for the Job to complete"
        return Verdict(Phase.RUNNING, "PodSucceeded", message)
    live = [p for p in o.pods if not p.terminated and not p.deleting]
    if o.current_phase is Phase.RUNNING and not live and any(p.terminated for p in o.pods):
        previous: Mapping[str, Any] = next(
            (c for c in o.current.get("conditions") or [] if c.get("type") == "Running"), {}
        )
        message = str(previous.get("message") or "the pod finished")
        return Verdict(Phase.RUNNING, "PodRunning", message)  # the same message: no write
    return None


def _job_pending(o: Observed) -> Verdict | None:
    if o.job is None and not o.job_in_flight:
        return None
    # In flight: the same status as once the watch shows the Job (one patch, not two).
    fields = {} if o.job is not None else {"jobName": job_name_for(o.export.name)}
    return Verdict(Phase.PENDING, "JobCreated", PENDING_MESSAGE, fields)


def _job_vanished(o: Observed) -> Verdict | None:
    if not o.current.get("jobName") or o.current_phase not in (Phase.PENDING, Phase.RUNNING):
        return None
    message = f"Job {o.current['jobName']} disappeared before it finished"
    return failure(ExportError(ErrorCode.INTERNAL, message, retryable=True))


def _create_refused(o: Observed) -> Verdict | None:
    if o.waiting is None:
        return None
    # Admitted, not in line: no position. Phase Queued, and the condition says why.
    return Verdict(Phase.QUEUED, o.waiting.reason, o.waiting.message, waiting=o.waiting)


def _in_line(o: Observed) -> Verdict:
    if o.queue_position is not None:
        fields = {"queuePosition": o.queue_position}
        return Verdict(Phase.QUEUED, "WaitingForSlot", "waiting for a free slot", fields)
    return Verdict(Phase.PENDING, "Accepted", "waiting for admission", awaiting_admission=True)


Rule = Callable[[Observed], Verdict | None]
RULES: tuple[Rule, ...] = (
    _job_complete,
    _job_failed,
    _cancelled,
    _invalid,
    _stuck,
    _pod_running,
    _pod_ended,
    _job_pending,
    _job_vanished,
    _create_refused,
)


def _owned(o: Observed) -> dict[str, Any]:
    status = {k: o.current[k] for k in OWNED_FIELDS if k in o.current}
    return {**status, "observedGeneration": o.export.generation}


def _final(o: Observed, phase: Phase) -> Decision:
    """Finished is final: only a result the pod watch delivered late is filled in."""
    status = _owned(o)
    result = None
    if phase is Phase.SUCCEEDED and "result" not in status:
        result = _result_or_none(p for p in o.pods if p.step in ("", "finish"))
        if result is not None:
            status["result"] = result.as_status()
    # A Job still going although the export ended here (cancel, watchdog) goes; one the job
    # controller is already ending (FailureTarget) is left to finish.
    delete = o.job is not None and o.job.occupies_slot and not o.job.ending
    return Decision(
        status=status, phase=phase, transition=False, message="", delete_job=delete, result=result
    )


def _decision(o: Observed, v: Verdict) -> Decision:
    """The whole owned status for a verdict."""
    status = _owned(o)
    if o.job is not None:
        status["jobName"] = o.job.name
        if o.job.finished or o.job.failed_condition is not None:
            status.update(_attempts(o))
    status.update(v.fields)
    status["phase"] = v.phase.value
    if v.phase is not Phase.QUEUED or v.waiting is not None:
        status.pop("queuePosition", None)
    if v.phase.finished:
        status["completionTime"] = status.get("completionTime") or format_time(v.completed or o.now)
        if v.error is not None:
            status["error"] = v.error.as_status()
        if v.result is not None:
            status["result"] = v.result.as_status()
    status["conditions"] = conditions_after(
        previous=o.current.get("conditions") or [],
        phase=v.phase,
        reason=v.reason,
        message=v.message,
        now=o.now,
        generation=o.export.generation,
        extra=v.condition,
    )
    return Decision(
        status=status,
        phase=v.phase,
        transition=v.phase is not o.current_phase,
        message=v.message,
        delete_job=v.delete_job,
        awaiting_admission=v.awaiting_admission,
        result=v.result,
        error=v.error,
        waiting=v.waiting,
    )


def _end_not_seen(o: Observed) -> bool:
    """The Job's watch shows it Complete, the pods' does not yet show its pod's end (two
    watches, either may come first). Succeeded now would be written without the result, and
    again once the pod showed it: a fourth status patch."""
    if o.job is None or o.current_phase not in (Phase.PENDING, Phase.RUNNING):
        return False
    complete = o.job.condition("Complete")
    since = o.job.status.completion_time or (complete.last_transition if complete else None)
    return (
        since is not None
        and o.now - since < RESULT_WAIT
        and any(not p.terminated and not p.deleting for p in o.pods)
        and _result_or_none(o.pods) is None
    )


def decide(*, rules: Sequence[Rule] = (), **observed: Any) -> Decision:
    """The desired status of an ExportJob; the keyword arguments are `Observed`'s fields.
    `rules`: others than `RULES` (a split export's: split_status.SPLIT_RULES)."""
    o = Observed(**observed)
    phase = o.current_phase
    if phase is not None and phase.finished:
        return _final(o, phase)
    if not rules and phase is not None and _end_not_seen(o):  # the pod's event comes back
        unchanged = {k: o.current[k] for k in OWNED_FIELDS if k in o.current}
        return Decision(status=unchanged, phase=phase, transition=False, message="")
    verdict = next((v for rule in rules or RULES if (v := rule(o)) is not None), None)
    return _decision(o, verdict or _in_line(o))
