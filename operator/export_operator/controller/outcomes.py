"""What the processor's pods and the Job say about how an export ended, and why a Job could not
be created (`Waiting`).

Pure functions: the result from a termination message, the error code of a failed Job (exit code
2 → BAD_CSV, 3 → SOURCE_NOT_FOUND, deadline → DEADLINE_EXCEEDED, OOM-killed → OOM_KILLED, retries
exhausted → the last cause) and the watchdog's verdict on pods stuck before they run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from export_operator import termination
from export_operator.controller.snapshots import JobCondition, JobView, PodView
from export_operator.kube import KubeError
from export_operator.resource import ErrorCode, ExitCode
from export_operator.termination import ResultMessage

MAX_MESSAGE = 1024
IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
START_FAILURE_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
"""Waiting reasons of a container that the kubelet cannot create or start (e.g. a NUL byte in
an environment value, a missing Secret): they do not go away by themselves."""
_EXIT_CODE_IN_MESSAGE = re.compile(r"exit code (?P<code>\d+)")


@dataclasses.dataclass(frozen=True, slots=True)
class ExportError:
    """`status.error` of an ExportJob."""

    code: str
    message: str
    retryable: bool = False

    def as_status(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message[:MAX_MESSAGE],
            "retryable": self.retryable,
        }


def result_from_pods(pods: Iterable[PodView]) -> ResultMessage | None:
    """The result of the pod that succeeded, if its message carries one.

    Raises:
        termination.ProtocolError: the message carries a malformed one (`bytes` 1e999, a `uri`
            over 2,048 characters, ...): the export fails with PROCESSOR_PROTOCOL.
    """
    for pod in pods:
        if pod.exit_code == int(ExitCode.OK):
            result = termination.read_result(pod.container.termination_message)
            if result is not None:
                return result
    return None


def protocol_error(exc: termination.ProtocolError) -> ExportError:
    """The export's error for a termination message that breaks the processor's contract."""
    return ExportError(ErrorCode.PROCESSOR_PROTOCOL, str(exc), retryable=False)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_MESSAGE] if lines else ""


def error_from_pod(pod: PodView) -> ExportError:
    """The cause of one failed pod: the processor's own error JSON first, then the exit code."""
    if pod.container.terminated_reason == "OOMKilled":
        return ExportError(
            ErrorCode.OOM_KILLED,
            f"the processor ran out of memory (pod {pod.name}, exit code {pod.exit_code})",
            retryable=True,
        )
    try:
        reported = termination.read_error(pod.container.termination_message)
    except termination.ProtocolError as exc:
        return protocol_error(exc)
    if reported is not None:
        return ExportError(
            reported.code, reported.message or reported.code, retryable=reported.retryable
        )
    detail = _one_line(pod.container.termination_message)
    suffix = f": {detail}" if detail else ""
    return _error_for_exit_code(
        pod.exit_code, f"pod {pod.name} exited with {pod.exit_code}{suffix}"
    )


def _error_for_exit_code(code: int | None, message: str) -> ExportError:
    if code == int(ExitCode.BAD_INPUT):
        return ExportError(ErrorCode.BAD_CSV, message, retryable=False)
    if code == int(ExitCode.SOURCE_MISSING):
        return ExportError(ErrorCode.SOURCE_NOT_FOUND, message, retryable=False)
    return ExportError(ErrorCode.INTERNAL, message, retryable=True)


def _last_failed_pod(pods: Sequence[PodView]) -> PodView | None:
    failed = [p for p in pods if p.exit_code not in (None, int(ExitCode.OK))]
    if not failed:
        return None
    return max(failed, key=lambda p: (p.container.finished_at or p.created, p.created, p.name))


def classify_job_failure(
    *, job: JobView, condition: JobCondition, pods: Sequence[PodView]
) -> ExportError:
    """The error of a failed Job, from its failure condition and its pods."""
    reason = condition.reason
    if reason == "DeadlineExceeded":
        return ExportError(
            ErrorCode.DEADLINE_EXCEEDED,
            f"the export did not finish within its deadline: {condition.message}".rstrip(": "),
            retryable=False,
        )
    last = _last_failed_pod(pods)
    if reason == "PodFailurePolicy":
        if last is not None:
            error = error_from_pod(last)
            return dataclasses.replace(error, retryable=False)
        match = _EXIT_CODE_IN_MESSAGE.search(condition.message)
        code = int(match["code"]) if match else None
        return dataclasses.replace(_error_for_exit_code(code, condition.message), retryable=False)
    if last is not None:
        error = error_from_pod(last)
        if reason == "BackoffLimitExceeded":
            message = (
                f"retries exhausted ({job.status.failed} failed attempts); last: {error.message}"
            )
            return dataclasses.replace(error, message=message)
        return error
    return ExportError(
        ErrorCode.INTERNAL, f"the Job failed: {reason}: {condition.message}", retryable=True
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Watchdog:
    """How long a pod may be stuck before it runs (seconds)."""

    unschedulable_timeout: float
    image_pull_timeout: float
    start_timeout: float = 300.0

    def stuck(self, pod: PodView) -> Iterator[tuple[dt.datetime, ExportError]]:
        """For a pod stuck before it runs: when the watchdog fails it, and with what error."""
        if pod.deleting or pod.terminated or pod.running:
            return
        scheduled = pod.scheduled
        if scheduled.status == "False" and scheduled.reason == "Unschedulable":
            limit = self.unschedulable_timeout
            message = f"pod {pod.name} could not be scheduled for over {int(limit)}s: "
            yield (
                (scheduled.since or pod.created) + dt.timedelta(seconds=limit),
                ExportError(
                    ErrorCode.UNSCHEDULABLE, f"{message}{scheduled.message}".rstrip(": "), True
                ),
            )
        reason = pod.container.waiting_reason
        if reason in IMAGE_PULL_REASONS:
            code, what, limit = ErrorCode.IMAGE_PULL, "pull its image", self.image_pull_timeout
        elif reason in START_FAILURE_REASONS:
            code, what, limit = (
                ErrorCode.POD_START_FAILED,
                "start its container",
                self.start_timeout,
            )
        else:
            return
        since = scheduled.since if scheduled.status == "True" else None
        message = (
            f"pod {pod.name} could not {what} for over {int(limit)}s: "
            f"{reason}: {pod.container.waiting_message}"
        )
        yield (
            (since or pod.created) + dt.timedelta(seconds=limit),
            ExportError(code, message.rstrip(": "), retryable=False),
        )

    def deadline(self, pods: Sequence[PodView]) -> dt.datetime | None:
        """When `failure` fails the first stuck pod if nothing changes; None if none is."""
        return min((due for pod in pods for due, _ in self.stuck(pod)), default=None)

    def failure(self, pods: Sequence[PodView], now: dt.datetime) -> ExportError | None:
        """An error when a pod stays unschedulable, cannot pull its image or cannot start its
        container for too long."""
        return next((e for pod in pods for due, e in self.stuck(pod) if now > due), None)


@dataclasses.dataclass(frozen=True, slots=True)
class Waiting:
    """Why an admitted ExportJob has no Job yet: its create was refused (retried with backoff)."""

    reason: str
    """`QuotaExceeded`, `Forbidden`, `APIUnavailable` or `CreateFailed`."""
    message: str


class JobCreateError(Exception):
    """The Job could not be created (quota, RBAC, API down): shown on the status, retried."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__(f"{waiting.reason}: {waiting.message}")
        self.waiting = waiting


def create_error_reason(exc: KubeError) -> str:
    """The condition reason for a refused Job create (kept stable: users and alerts match it)."""
    if exc.status == 403 and "exceeded quota" in exc.message.lower():
        return "QuotaExceeded"
    if exc.status == 403:
        return "Forbidden"
    if exc.retryable:
        return "APIUnavailable"
    return "CreateFailed"
