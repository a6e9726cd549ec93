"""Issue 24 on the real API server and job controller: a hostile processor's termination message
(`bytes` 1e999, a `uri` over 2,048 characters, a `sha256` over 64, an error code over 64 or
outside the condition-reason pattern) ends its export Failed with PROCESSOR_PROTOCOL and a
message, frees its slot (maxRunning 1: the next export gets its Job) and sends its completion
callback, once; before, the status patch was refused and the export was retried for good,
holding its slot, with no final phase and no callback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.callback_receiver import Receiver, assert_signed, notification, start
from tests.support.operator_process import Exports, OperatorProcess
from tests.support.wait import wait_for

GOOD = {"uri": "s3://out/reports/x/x.csv", "bytes": 10, "rows": 2, "sha256": "ab" * 32,
        "format": "csv"}  # fmt: skip
CASES = {
    "bytes-1e999": (0, json.dumps(GOOD)[:-1] + ', "bytes": 1e999}'),
    "uri-over-2048": (0, json.dumps({**GOOD, "uri": "s3://out/reports/x/" + "k" * 2048})),
    "sha256-over-64": (0, json.dumps({**GOOD, "sha256": "a" * 65})),
    "code-over-64": (2, json.dumps({"error": {"code": "C" * 65, "message": "m"}})),
    "code-not-a-reason": (2, json.dumps({"error": {"code": "not a reason!", "message": "m"}})),
}


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_termination_message_fails_the_export_frees_its_slot_and_calls_back(
    exports: Exports,
    operator: OperatorProcess,
    receiver: Receiver,
    secrets_dir: Path,
    case: str,
) -> None:
    start(operator, secrets_dir, max_running=1)
    exit_code, message = CASES[case]
    exports.create("bad", notify={"url": receiver.url("bad")})
    pod = exports.wait_pod("bad")
    exports.create("next")
    exports.run_pod(pod)
    exports.finish_pod(pod, exit_code=exit_code, message=message)
    status = exports.wait_phase("bad", "Failed")
    assert status["error"]["code"] == "PROCESSOR_PROTOCOL", status
    assert status["error"]["message"]
    assert "result" not in status
    wait_for("the next export's Job (the slot is free)", lambda: exports.job("next"))
    note = notification(exports, "bad", "Delivered")
    assert note["attempts"] == 1
    time.sleep(1)  # nothing more arrives
    (delivery,) = receiver.deliveries("bad")
    assert_signed(delivery)
    assert delivery.event["type"] == "dev.exportjobs.export.failed"
    assert delivery.event["data"]["error"]["code"] == "PROCESSOR_PROTOCOL"
