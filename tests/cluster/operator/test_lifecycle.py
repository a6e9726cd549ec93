"""One ExportJob through the operator and the real job controller: success, failures, retries,
deadline, cancellation, deletion, `kubectl wait`."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

from tests.support.net import free_port
from tests.support.operator_process import Exports, OperatorProcess
from tests.support.tools import tool
from tests.support.wait import wait_for


def _conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status.get("conditions", [])}


def test_success_copies_the_result_and_kubectl_wait_works(
    exports: Exports, operator: OperatorProcess, namespace: str
) -> None:
    port = free_port()
    operator.start(metrics_host="127.0.0.1", metrics_port=port)
    exports.create("ok", format="csv")
    job = wait_for("the Job", lambda: exports.job("ok"))
    assert job.metadata.owner_references[0].name == "ok"
    assert job.metadata.labels["exportjobs.dev/export"] == "ok"
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["EXPORTJOBS_SOURCE_URI"] == "s3://source-bucket/ok.csv"
    assert env["EXPORTJOBS_DESTINATION_URI"] == "s3://out/reports/"
    assert exports.wait_phase("ok", "Pending")["jobName"] == "export-ok"

    waiter = subprocess.Popen(
        [
            tool("kubectl"),
            "-n",
            namespace,
            "wait",
            "--for=condition=Succeeded",
            "exportjob/ok",
            "--timeout=60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pod = exports.wait_pod("ok")
    exports.run_pod(pod)
    running = exports.wait_phase("ok", "Running")
    assert _conditions(running)["Running"]["status"] == "True"
    result = {
        "uri": "s3://out/reports/ok/ok.csv",
        "bytes": 10,
        "rows": 2,
        "sha256": "ab" * 32,
        "format": "csv",
        "bytesRead": 20,
        "durationSeconds": 0.1,
    }
    exports.finish_pod(pod, exit_code=0, message=json.dumps(result))
    status = exports.wait_phase("ok", "Succeeded")
    assert status["result"] == {k: result[k] for k in ("uri", "bytes", "rows", "sha256", "format")}
    assert status["attempts"] == 1
    assert status["completionTime"] and status["startTime"]
    assert "error" not in status
    # kopf only runs the process: it keeps nothing on the object (the CRD reserves no status.kopf).
    annotations = exports.get("ok")["metadata"].get("annotations") or {}
    assert not [key for key in annotations if "kopf" in key], annotations
    conditions = _conditions(status)
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Running"]["status"] == "False"
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, out
    assert "condition met" in out
    reasons = wait_for(
        "the transition Events",
        lambda: (
            {"Pending", "Running", "Succeeded"}
            <= {
                e.reason
                for e in exports.core.list_namespaced_event(
                    namespace, field_selector="involvedObject.name=ok"
                ).items
            }
        ),
    )
    assert reasons
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "exportjobs_operator_jobs_created_total 1.0" in metrics
    assert 'exportjobs_operator_phase_transitions_total{phase="Succeeded"} 1.0' in metrics
    assert 'exportjobs_processor_rows_total{format="csv"} 2.0' in metrics
    assert 'exportjobs_export_duration_seconds_count{format="csv"} 1.0' in metrics


def test_exit_code_2_fails_at_once_without_retry(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("bad", backoffLimit=3)
    pod = exports.wait_pod("bad")
    exports.run_pod(pod)
    message = {
        "error": {"code": "BAD_CSV", "message": "line 3: unterminated quote", "retryable": False}
    }
    exports.finish_pod(pod, exit_code=2, message=json.dumps(message))
    status = exports.wait_phase("bad", "Failed")
    assert status["error"] == {
        "code": "BAD_CSV",
        "message": "line 3: unterminated quote",
        "retryable": False,
    }
    assert _conditions(status)["Failed"]["reason"] == "BAD_CSV"

    def counted() -> Any | None:
        # The Job controller counts a failed pod in two writes (uncountedTerminatedPods, then
        # `failed`); the operator may report the export Failed in between.
        job = exports.job("bad")
        return job if job is not None and job.status.failed else None

    job = wait_for("the Job controller to count the failed pod", counted)
    assert job.status.failed == 1  # no second attempt: FailJob, not backoffLimit=3
    failed = [c for c in job.status.conditions if c.type == "Failed" and c.status == "True"]
    assert failed and failed[0].reason == "PodFailurePolicy"
    assert status["attempts"] == 1


def test_exit_code_3_without_message_is_source_not_found(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("missing")
    pod = exports.wait_pod("missing")
    exports.run_pod(pod)
    exports.finish_pod(pod, exit_code=3, message="NoSuchKey: source-bucket/missing.csv")
    status = exports.wait_phase("missing", "Failed")
    assert status["error"]["code"] == "SOURCE_NOT_FOUND"
    assert "NoSuchKey" in status["error"]["message"]


def test_retryable_failure_is_retried_then_succeeds(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("flaky", backoffLimit=2)
    first = exports.wait_pod("flaky")
    exports.run_pod(first)
    exports.finish_pod(first, exit_code=1, message="connection reset by peer")
    second = exports.wait_pod("flaky", fresh={first.metadata.name})
    assert exports.status("flaky").get("phase") in ("Running", "Pending")
    exports.run_pod(second)
    exports.finish_pod(
        second,
        exit_code=0,
        message=json.dumps(
            {
                "uri": "s3://out/reports/flaky/flaky.csv",
                "bytes": 1,
                "rows": 1,
                "sha256": "cd" * 32,
                "format": "csv",
            }
        ),
    )
    status = exports.wait_phase("flaky", "Succeeded")
    assert status["attempts"] == 2
    assert status["result"]["uri"] == "s3://out/reports/flaky/flaky.csv"


def test_retries_exhausted_report_the_last_cause(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("oom", backoffLimit=0)
    pod = exports.wait_pod("oom")
    exports.run_pod(pod)
    exports.finish_pod(pod, exit_code=137, reason="OOMKilled")
    status = exports.wait_phase("oom", "Failed")
    assert status["error"]["code"] == "OOM_KILLED"
    assert "retries exhausted" in status["error"]["message"]


def test_deadline_exceeded(exports: Exports, operator: OperatorProcess) -> None:
    operator.start()
    exports.create("slow", activeDeadlineSeconds=10)
    pod = exports.wait_pod("slow")
    exports.run_pod(pod)
    status = exports.wait_phase("slow", "Failed", timeout=40)
    assert status["error"]["code"] == "DEADLINE_EXCEEDED"
    assert status["error"]["retryable"] is False


def test_cancel_while_running_removes_job_and_pods(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("stop")
    pod = exports.wait_pod("stop")
    exports.run_pod(pod)
    exports.wait_phase("stop", "Running")
    exports.patch_spec("stop", {"cancel": True})
    status = exports.wait_phase("stop", "Cancelled")
    assert status["error"]["code"] == "CANCELLED"
    assert _conditions(status)["Cancelled"]["status"] == "True"
    wait_for("the Job to go", lambda: exports.job("stop") is None)
    wait_for("the pods to go", lambda: not exports.pods("stop"), timeout=30)


def test_cancel_while_queued_never_creates_a_job(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(max_running=1)
    exports.create("first")
    wait_for("the first Job", lambda: exports.job("first"))
    exports.create("second")
    status = exports.wait_phase("second", "Queued")
    assert status["queuePosition"] == 1
    assert _conditions(status)["Queued"]["status"] == "True"
    exports.patch_spec("second", {"cancel": True})
    status = exports.wait_phase("second", "Cancelled")
    assert "queuePosition" not in status
    exports.succeed("first")
    exports.wait_phase("first", "Succeeded")
    assert exports.job("second") is None


def test_deleting_the_exportjob_removes_its_job(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start()
    exports.create("gone")
    exports.wait_pod("gone")
    exports.delete("gone")
    wait_for("the Job to go", lambda: exports.job("gone") is None)
    wait_for("the pods to go", lambda: not exports.pods("gone"), timeout=30)


def test_invalid_spec_without_destination_fails_clearly(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(default_destination_uri="")
    exports.create("nowhere")
    status = exports.wait_phase("nowhere", "Failed")
    assert status["error"]["code"] == "INVALID_SPEC"
    assert "destination" in status["error"]["message"]
    assert _conditions(status)["Accepted"]["status"] == "False"
    assert exports.job("nowhere") is None


def test_watchdog_fails_an_unschedulable_export(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(node_selector='{"no-such-node": "x"}', unschedulable_timeout_seconds=2)
    exports.create("stuck")
    status = exports.wait_phase("stuck", "Failed", timeout=30)
    assert status["error"]["code"] == "UNSCHEDULABLE"
    wait_for("the Job to go", lambda: exports.job("stuck") is None)


def test_watchdog_fails_an_image_that_cannot_be_pulled(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(image_pull_timeout_seconds=2)
    exports.create("pull")
    pod = exports.wait_pod("pull")
    exports.stall_pod(pod, reason="ImagePullBackOff", message="no such image")
    status = exports.wait_phase("pull", "Failed", timeout=30)
    assert status["error"]["code"] == "IMAGE_PULL"
    assert "ImagePullBackOff" in status["error"]["message"]


def test_retention_deletes_finished_exportjobs(exports: Exports, operator: OperatorProcess) -> None:
    operator.start(retention_seconds=1)
    exports.create("old")
    exports.succeed("old")
    wait_for("retention to delete it", lambda: not exports.list(), timeout=30)
