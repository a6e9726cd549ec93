"""Issue 24: a termination message that breaks the processor's contract ends its export Failed
with PROCESSOR_PROTOCOL and a message (it was retried every ~30 s for good: the status patch was
refused, no final phase, no callback); a size that would overflow the sizing fails INVALID_SPEC."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from export_operator.controller.outcomes import Watchdog
from export_operator.controller.snapshots import ExportView
from export_operator.controller.status import decide
from export_operator.resource import ANNOTATION_SOURCE_SIZE, Phase
from tests.support.factories import condition, export, export_body, job, pod, terminated

GOOD = {"uri": "s3://out/r/e1/in.csv", "bytes": 10, "rows": 3, "sha256": "ab" * 32,
        "format": "csv"}  # fmt: skip
WATCHDOG = Watchdog(unschedulable_timeout=300, image_pull_timeout=300)
MALFORMED_RESULTS = {
    "bytes-1e999": json.dumps(GOOD)[:-1] + ', "bytes": 1e999}',
    "uri-over-2048": json.dumps({**GOOD, "uri": "s3://out/r/e1/" + "k" * 2048}),
    "sha256-over-64": json.dumps({**GOOD, "sha256": "a" * 65}),
}
MALFORMED_ERRORS = {
    "code-over-64": {"code": "C" * 65, "message": "m"},
    "code-not-a-reason": {"code": "not a reason!", "message": "m"},
}


def _decide(pods: list[Any], *, failed: bool) -> Any:
    conditions = [condition("Failed", "PodFailurePolicy")] if failed else [condition("Complete")]
    return decide(
        export=export("e1"),
        current={"phase": "Running", "jobName": "export-e1"},
        job=job(succeeded=0 if failed else 1, failed=1 if failed else 0, conditions=conditions),
        pods=pods,
        job_in_flight=False,
        queue_position=None,
        invalid_spec=None,
        now=dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC),
        watchdog=WATCHDOG,
    )


@pytest.mark.parametrize("message", list(MALFORMED_RESULTS.values()), ids=list(MALFORMED_RESULTS))
def test_a_malformed_result_fails_the_export(message: str) -> None:
    done = pod(phase="Succeeded", state=terminated(0, message, reason="Completed"))
    decision = _decide([done], failed=False)
    assert decision.phase is Phase.FAILED
    assert decision.status["error"]["code"] == "PROCESSOR_PROTOCOL"
    assert decision.status["error"]["message"]
    assert "result" not in decision.status
    assert len(json.dumps(decision.status)) < 20_000


@pytest.mark.parametrize("error", list(MALFORMED_ERRORS.values()), ids=list(MALFORMED_ERRORS))
def test_a_malformed_error_fails_the_export_with_its_own_code(error: dict[str, Any]) -> None:
    failed = pod(phase="Failed", state=terminated(2, json.dumps({"error": error})))
    decision = _decide([failed], failed=True)
    assert decision.phase is Phase.FAILED
    assert decision.status["error"]["code"] == "PROCESSOR_PROTOCOL"
    reasons = {c["reason"] for c in decision.status["conditions"]}
    assert "PROCESSOR_PROTOCOL" in reasons


@pytest.mark.parametrize("size", ["9" * 400, str(10**20), "-5", "²"])
def test_a_hostile_size_annotation_is_no_size(size: str) -> None:
    body = export_body("e1")
    body["metadata"].setdefault("annotations", {})[ANNOTATION_SOURCE_SIZE] = size
    assert ExportView.from_body(body).source_size is None
