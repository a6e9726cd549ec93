"""Status derivation from the Job and its pods, and the error mapping."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from export_operator.controller.apicalls import status_patch
from export_operator.controller.conditions import set_condition
from export_operator.controller.outcomes import Watchdog
from export_operator.controller.snapshots import JobView, PodView
from export_operator.controller.status import decide
from export_operator.resource import ConditionType, Phase
from export_operator.termination import ProtocolError, read_result
from tests.support.factories import condition, export, job, pod, terminated

NOW = dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC)
WATCHDOG = Watchdog(unschedulable_timeout=300, image_pull_timeout=300)
RESULT = {
    "uri": "s3://out/r/e1/in.csv",
    "bytes": 10,
    "rows": 3,
    "sha256": "ab" * 32,
    "format": "csv",
    "bytesRead": 30,
    "durationSeconds": 1.5,
}


def _decide(
    *,
    current: dict[str, Any] | None = None,
    the_job: JobView | None = None,
    pods: list[PodView] | None = None,
    in_flight: bool = False,
    position: int | None = None,
    invalid: str | None = None,
    spec: dict[str, Any] | None = None,
    now: dt.datetime = NOW,
):
    return decide(
        export=export("e1", spec=spec) if spec else export("e1"),
        current=current or {},
        job=the_job,
        pods=pods or [],
        job_in_flight=in_flight,
        queue_position=position,
        invalid_spec=invalid,
        now=now,
        watchdog=WATCHDOG,
    )


def _conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_new_export_waits_for_admission_without_writing() -> None:
    decision = _decide()
    assert decision.awaiting_admission


def test_queued_then_admitted() -> None:
    queued = _decide(position=3)
    assert queued.phase is Phase.QUEUED
    assert queued.status["queuePosition"] == 3
    assert _conds(queued.status)["Queued"]["status"] == "True"
    admitted = _decide(current=queued.status, in_flight=True)
    assert admitted.phase is Phase.PENDING and admitted.transition
    assert "queuePosition" not in admitted.status
    assert _conds(admitted.status)["Queued"] | {"lastTransitionTime": None} == {
        "type": "Queued",
        "status": "False",
        "reason": "Admitted",
        "message": "left the queue",
        "lastTransitionTime": None,
        "observedGeneration": 1,
    }
    assert status_patch(queued.status, admitted.status)["queuePosition"] is None


def test_running_when_a_pod_runs() -> None:
    running_pod = pod(phase="Running", state={"running": {"startedAt": "2026-01-01T00:01:00Z"}})
    decision = _decide(the_job=job(active=1), pods=[running_pod])
    assert decision.phase is Phase.RUNNING
    assert decision.status["jobName"] == "export-e1"
    assert decision.status["attempts"] == 1
    assert decision.status["startTime"] == "2026-01-01T00:00:05Z"
    assert _conds(decision.status)["Running"]["status"] == "True"


def test_stays_running_between_pod_success_and_job_complete() -> None:
    # Seen in `make demo`: Running → Pending → Succeeded while the job controller caught up.
    done = pod(phase="Succeeded", state=terminated(0, json.dumps(RESULT), reason="Completed"))
    decision = _decide(
        current={"phase": "Running", "jobName": "export-e1"},
        the_job=job(active=0, succeeded=0),
        pods=[done],
    )
    assert decision.phase is Phase.RUNNING
    assert not decision.transition


def test_success_copies_the_result() -> None:
    done = pod(phase="Succeeded", state=terminated(0, json.dumps(RESULT), reason="Completed"))
    decision = _decide(
        current={"phase": "Running", "jobName": "export-e1"},
        the_job=job(succeeded=1, conditions=[condition("Complete")]),
        pods=[done],
    )
    assert decision.phase is Phase.SUCCEEDED
    assert decision.status["result"] == {
        k: RESULT[k] for k in ("uri", "bytes", "rows", "sha256", "format")
    }
    assert decision.result is not None and decision.result.bytes_read == 30
    assert _conds(decision.status)["Succeeded"]["status"] == "True"
    assert _conds(decision.status)["Running"]["status"] == "False"
    assert decision.status["completionTime"]
    assert "error" not in decision.status


@pytest.mark.parametrize(
    ("exit_code", "message", "code"),
    [
        (2, "", "BAD_CSV"),
        (3, "", "SOURCE_NOT_FOUND"),
        (
            2,
            json.dumps({"error": {"code": "BAD_ENCODING", "message": "not utf-8"}}),
            "BAD_ENCODING",
        ),
    ],
)
def test_fail_job_exit_codes(exit_code: int, message: str, code: str) -> None:
    failed = pod(phase="Failed", state=terminated(exit_code, message))
    decision = _decide(
        the_job=job(failed=1, conditions=[condition("Failed", "PodFailurePolicy")]), pods=[failed]
    )
    assert decision.phase is Phase.FAILED
    assert decision.status["error"]["code"] == code
    assert decision.status["error"]["retryable"] is False
    assert _conds(decision.status)["Failed"]["reason"] == code


def test_fail_job_exit_code_from_the_condition_when_the_pod_is_gone() -> None:
    message = "Container processor for pod ns/p1 failed with exit code 3 matching FailJob rule"
    decision = _decide(
        the_job=job(failed=1, conditions=[condition("Failed", "PodFailurePolicy", message)])
    )
    assert decision.status["error"]["code"] == "SOURCE_NOT_FOUND"


def test_failure_target_already_counts_as_failed() -> None:
    decision = _decide(
        the_job=job(failed=1, conditions=[condition("FailureTarget", "DeadlineExceeded")])
    )
    assert decision.phase is Phase.FAILED
    assert decision.status["error"]["code"] == "DEADLINE_EXCEEDED"
    assert not decision.delete_job


def test_finished_job_of_failure_target_is_not_deleted_afterwards() -> None:
    """Regression: a Failed (sticky) export deleted its Job still in FailureTarget."""
    ending = job(active=0, failed=1, conditions=[condition("FailureTarget", "PodFailurePolicy")])
    decision = _decide(current={"phase": "Failed"}, the_job=ending)
    assert not decision.delete_job


def test_deadline_exceeded() -> None:
    decision = _decide(
        the_job=job(
            conditions=[
                condition(
                    "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
            ]
        )
    )
    assert decision.status["error"]["code"] == "DEADLINE_EXCEEDED"


def test_retries_exhausted_give_the_last_cause() -> None:
    first = pod("p1", phase="Failed", state=terminated(1, "connection reset"))
    last = pod(
        "p2",
        phase="Failed",
        created="2026-01-01T00:05:00Z",
        state={
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "finishedAt": "2026-01-01T00:09:30Z",
            }
        },
    )
    decision = _decide(
        the_job=job(failed=2, conditions=[condition("Failed", "BackoffLimitExceeded")]),
        pods=[first, last],
    )
    assert decision.status["error"]["code"] == "OOM_KILLED"
    assert "retries exhausted (2 failed attempts)" in decision.status["error"]["message"]
    assert decision.status["attempts"] == 2


def test_retryable_failure_with_a_log_tail_message() -> None:
    failed = pod(phase="Failed", state=terminated(1, "Traceback ...\nConnectionError: boom\n"))
    decision = _decide(
        the_job=job(failed=1, conditions=[condition("Failed", "BackoffLimitExceeded")]),
        pods=[failed],
    )
    assert decision.status["error"]["code"] == "INTERNAL"
    assert decision.status["error"]["message"].endswith("ConnectionError: boom")
    assert decision.status["error"]["retryable"] is True


def test_cancel_deletes_the_job() -> None:
    decision = _decide(
        spec={"source": {"uri": "s3://s/a.csv"}, "format": "csv", "cancel": True},
        the_job=job(active=1),
    )
    assert decision.phase is Phase.CANCELLED
    assert decision.delete_job
    assert decision.status["error"]["code"] == "CANCELLED"


def test_success_wins_over_a_late_cancel() -> None:
    decision = _decide(
        spec={"source": {"uri": "s3://s/a.csv"}, "format": "csv", "cancel": True},
        the_job=job(succeeded=1, conditions=[condition("Complete")]),
    )
    assert decision.phase is Phase.SUCCEEDED
    assert not decision.delete_job


def test_finished_is_sticky() -> None:
    decision = _decide(
        current={"phase": "Cancelled"}, the_job=job(succeeded=1, conditions=[condition("Complete")])
    )
    assert decision.phase is Phase.CANCELLED and not decision.transition


def test_late_result_is_filled_in_on_a_finished_export() -> None:
    done = pod(phase="Succeeded", state=terminated(0, json.dumps(RESULT), reason="Completed"))
    decision = _decide(
        current={"phase": "Succeeded"},
        the_job=job(succeeded=1, conditions=[condition("Complete")]),
        pods=[done],
    )
    assert decision.status["result"]["uri"] == RESULT["uri"]


def test_invalid_spec_fails_without_acceptance() -> None:
    decision = _decide(invalid="no destination")
    assert decision.phase is Phase.FAILED
    assert decision.status["error"] == {
        "code": "INVALID_SPEC",
        "message": "no destination",
        "retryable": False,
    }
    assert _conds(decision.status)["Accepted"]["status"] == "False"


def test_vanished_job_fails_the_export() -> None:
    decision = _decide(current={"phase": "Running", "jobName": "export-e1"})
    assert decision.phase is Phase.FAILED
    assert "disappeared" in decision.status["error"]["message"]


def test_watchdog_unschedulable() -> None:
    stuck = pod(
        scheduled={
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available",
            "lastTransitionTime": "2026-01-01T00:18:00Z",
        }
    )
    assert _decide(the_job=job(active=1), pods=[stuck]).phase is Phase.PENDING
    late = NOW + dt.timedelta(minutes=10)
    decision = _decide(the_job=job(active=1), pods=[stuck], now=late)
    assert decision.phase is Phase.FAILED
    assert decision.status["error"]["code"] == "UNSCHEDULABLE"
    assert "0/1 nodes are available" in decision.status["error"]["message"]
    assert decision.delete_job


def test_watchdog_image_pull() -> None:
    pulling = pod(
        scheduled={
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:06Z",
        },
        state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
    )
    decision = _decide(the_job=job(active=1), pods=[pulling])
    assert decision.status["error"]["code"] == "IMAGE_PULL"
    assert decision.delete_job


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = set_condition(
        [],
        type_=ConditionType.RUNNING,
        status="True",
        reason="A",
        message="m",
        now=NOW,
        generation=1,
    )
    later = NOW + dt.timedelta(minutes=1)
    same = set_condition(
        first,
        type_=ConditionType.RUNNING,
        status="True",
        reason="B",
        message="n",
        now=later,
        generation=1,
    )
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert same[0]["reason"] == "B"
    flipped = set_condition(
        same,
        type_=ConditionType.RUNNING,
        status="False",
        reason="C",
        message="o",
        now=later,
        generation=1,
    )
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:21:00Z"


def test_status_patch_touches_only_owned_fields() -> None:
    current = {"phase": "Running", "progress": {"percent": 50}, "queuePosition": 2}
    patch = status_patch(current, {"phase": "Succeeded"})
    assert patch == {"phase": "Succeeded", "queuePosition": None}


def test_result_parsing_refuses_garbage() -> None:
    assert read_result("not json") is None
    with pytest.raises(ProtocolError):  # a result, but not one the contract allows
        read_result(json.dumps({"uri": "s3://x/y", "format": "xml"}))
    assert read_result(json.dumps({"error": {"code": "X"}})) is None


def test_a_cancel_that_loses_the_race_to_completion_ends_succeeded() -> None:
    """The pod wrote its output and exited 0; the Job is not marked Complete yet when the
    cancel is seen: the export ends Succeeded with its result, nothing orphaned in S3."""
    done = pod(phase="Succeeded", state=terminated(0, json.dumps(RESULT), reason="Completed"))
    decision = _decide(
        spec={"source": {"uri": "s3://src/a.csv"}, "format": "csv", "cancel": True},
        the_job=job(active=0, succeeded=1),
        pods=[done],
    )
    assert decision.phase is Phase.SUCCEEDED
    assert decision.status["result"]["uri"] == RESULT["uri"]
    assert "error" not in decision.status and not decision.delete_job
    assert decision.status["completionTime"] == "2026-01-01T00:09:00Z"


def test_a_cancel_before_the_output_is_complete_ends_cancelled() -> None:
    failed = pod(phase="Failed", state=terminated(1, '{"error":{"code":"CANCELLED"}}'))
    decision = _decide(
        spec={"source": {"uri": "s3://src/a.csv"}, "format": "csv", "cancel": True},
        the_job=job(active=1),
        pods=[failed],
    )
    assert decision.phase is Phase.CANCELLED and decision.delete_job


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("INVALID_CONFIG", "the CSV delimiter must be one printable ASCII character or a tab"),
        ("DESTINATION_NOT_FOUND", "writing s3://nope/out/x.csv: the destination bucket does not"),
        ("S3_REFUSED", "reading s3://in/a.csv: S3 refused the request (AccessDenied)"),
    ],
)
def test_the_processors_reason_reaches_status_error(code: str, message: str) -> None:
    """Exit 2 fails the Job at once (podFailurePolicy); the code and message are the
    processor's own, not BAD_CSV with "pod … exited with 2"."""
    report = json.dumps({"error": {"code": code, "message": message, "retryable": False}})
    failed = pod(phase="Failed", state=terminated(2, report))
    decision = _decide(
        the_job=job(failed=1, conditions=[condition("Failed", "PodFailurePolicy")]), pods=[failed]
    )
    assert decision.phase is Phase.FAILED
    assert decision.status["error"] == {"code": code, "message": message, "retryable": False}
