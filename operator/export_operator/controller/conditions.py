"""`status.conditions` of an ExportJob (metav1.Condition semantics), from the phase decided."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from export_operator.controller.snapshots import format_time
from export_operator.resource import ConditionType, ErrorCode, Phase

_FINISH_CONDITION = {
    Phase.SUCCEEDED: ConditionType.SUCCEEDED,
    Phase.FAILED: ConditionType.FAILED,
    Phase.CANCELLED: ConditionType.CANCELLED,
}


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: ConditionType,
    status: str,
    reason: str,
    message: str,
    *,
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


def conditions_after(
    *,
    previous: Sequence[Mapping[str, Any]],
    phase: Phase,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
    extra: tuple[ConditionType, str, str, str] | None = None,
) -> list[dict[str, Any]]:
    """The conditions after a decision: Accepted, Queued, Running and the finishing one, then
    `extra` (type, status, reason, message) when given."""
    wanted: list[tuple[ConditionType, str, str, str]] = []
    present = {str(c.get("type")) for c in previous}
    if reason == ErrorCode.INVALID_SPEC:
        wanted.append((ConditionType.ACCEPTED, "False", "InvalidSpec", message))
    else:
        wanted.append((ConditionType.ACCEPTED, "True", "Accepted", "the export was accepted"))
    if phase is Phase.QUEUED:
        wanted.append((ConditionType.QUEUED, "True", reason, message))
    elif ConditionType.QUEUED.value in present:
        why = "Admitted" if phase in (Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED) else str(phase)
        wanted.append((ConditionType.QUEUED, "False", why, "left the queue"))
    if phase is Phase.RUNNING:
        wanted.append((ConditionType.RUNNING, "True", "PodRunning", message))
    elif ConditionType.RUNNING.value in present or phase.finished:
        why = "PodPending" if phase is Phase.PENDING else str(phase.value)
        wanted.append((ConditionType.RUNNING, "False", why, message))
    finish = _FINISH_CONDITION.get(phase)
    if finish is not None:
        wanted.append((finish, "True", reason, message))
    if extra is not None:
        wanted.append(extra)
    conditions = [dict(c) for c in previous]
    for condition in wanted:  # (type, status, reason, message)
        conditions = set_condition(conditions, *condition, now=now, generation=generation)
    return conditions
