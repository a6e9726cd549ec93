"""Split exports through the operator and the real job controller (kwok node, the test plays the
kubelet): the Indexed Job and its slots, the prepare and finishing steps, one source version
for every pod, per-index retries, summed progress, one result; a cancel that ends every index
and cleans up; a source changed between ranges; one callback per split export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.callback_receiver import Receiver, assert_signed, notification, start
from tests.support.operator_process import Exports, OperatorProcess
from tests.support.wait import wait_for

STEP = "exportjobs.dev/step"
INDEX = "batch.kubernetes.io/job-completion-index"


def _pods(exports: Exports, name: str, step: str, *, pending: bool = True) -> list[Any]:
    """The live, scheduled pods of one step of ExportJob `name` (Pending ones: not yet run)."""
    return [
        p
        for p in exports.pods(name)
        if (p.metadata.labels or {}).get(STEP) == step
        and p.metadata.deletion_timestamp is None
        and p.spec.node_name
        and (p.status.phase == "Pending" or not pending)
    ]


def _index(pod: Any) -> int:
    return int(pod.metadata.annotations[INDEX])


def _range_result(index: int) -> str:
    return json.dumps(
        {
            "uri": f"s3://out/reports/big/big.csv.parts/{index:05d}",
            "bytes": 25,
            "rows": 10,
            "sha256": "ab" * 32,
            "format": "csv",
            "bytesRead": 30,
            "range": {"start": index * 100, "end": index * 100 + 100, "kinds": []},
        }
    )


def _pinned(upload_id: str | None, etag: str = '"etag-1"', version: str = "v-1") -> str:
    """What a `prepare` pod reports: the upload (None for parquet) and the source version."""
    return json.dumps({"uploadId": upload_id, "source": {"etag": etag, "versionId": version}})


def _prepare(exports: Exports, name: str, message: str) -> Any:
    """Run the export's prepare pod to `message`; the ranges Job once resumed."""
    [prepare] = wait_for("the prepare pod", lambda: _pods(exports, name, "prepare") or None)
    assert prepare.spec.containers[0].args == ["--prepare-ranges"]
    exports.run_pod(prepare)
    exports.finish_pod(prepare, exit_code=0, message=message)
    return wait_for(
        "the ranges Job resumed",
        lambda: (j := exports.job(name)) is not None and not j.spec.suspend and j,
    )


def _env_from(pod: Any) -> dict[str, str]:
    """The env a pod gets from its annotations (what the kubelet would resolve)."""
    return {
        e.name: e.value_from.field_ref.field_path
        for e in pod.spec.containers[0].env
        if e.value_from is not None and e.value_from.field_ref is not None
    }


def _job(exports: Exports, name: str) -> Any | None:
    found = [j for j in exports.jobs() if j.metadata.name == name]
    return found[0] if found else None


def test_a_split_export_runs_as_an_indexed_job_and_ends_as_one_result(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(max_running=5)
    exports.create("w1")  # a whole export: one slot
    wait_for("w1's Job", lambda: exports.job("w1"))
    exports.create("big", parallelism=4)
    job = wait_for("the ranges Job", lambda: exports.job("big"))
    spec = job.spec
    assert (spec.completion_mode, spec.completions, spec.parallelism) == ("Indexed", 4, 4)
    assert spec.suspend is True and spec.backoff_limit_per_index == 3
    assert job.metadata.labels[STEP] == "ranges"
    assert exports.wait_phase("big", "Pending")["jobName"] == "export-big"
    # 1 + 4 slots of 5 held: the next export waits, first in line.
    exports.create("after")
    assert exports.wait_phase("after", "Queued")["queuePosition"] == 1

    # The prepare step pins the source's version and opens the upload; the ranges Job starts
    # with both, and every range pod reads that version.
    resumed = _prepare(exports, "big", _pinned("upload-1"))
    assert resumed.spec.template.metadata.annotations == {
        "exportjobs.dev/upload-id": "upload-1",
        "exportjobs.dev/source-etag": '"etag-1"',
        "exportjobs.dev/source-version-id": "v-1",
    }
    ranges = wait_for(
        "4 range pods", lambda: (p := _pods(exports, "big", "ranges")) and len(p) == 4 and p
    )
    assert sorted(map(_index, ranges)) == [0, 1, 2, 3]
    for pod in ranges:
        assert pod.metadata.annotations["exportjobs.dev/source-etag"] == '"etag-1"'
        assert _env_from(pod)["EXPORTJOBS_SOURCE_ETAG"] == (
            "metadata.annotations['exportjobs.dev/source-etag']"
        )
        assert _env_from(pod)["EXPORTJOBS_SOURCE_VERSION_ID"] == (
            "metadata.annotations['exportjobs.dev/source-version-id']"
        )
    for pod in ranges:
        exports.run_pod(pod)
    running = exports.wait_phase("big", "Running")
    assert "converting 4 ranges, 4 at a time" in json.dumps(running["conditions"])

    # Each range patches its own progress; the operator adds them up.
    exports.set_status(
        "big",
        {
            "progress": {
                "ranges": {
                    str(i): {"bytesRead": 50, "bytesTotal": 100, "rows": 5} for i in range(4)
                }
            }
        },
    )
    summed = wait_for(
        "the summed progress",
        lambda: (p := exports.status("big").get("progress", {})).get("bytesRead") == 200 and p,
    )
    assert summed["percent"] == 50 and summed["rows"] == 20 and summed["bytesTotal"] == 400

    # Index 2 fails retryably: retried per index. Index 3 fails with bad input: not retried, it
    # is the finishing step's to convert again. The export stays Running.
    by_index = {_index(p): p for p in ranges}
    exports.finish_pod(
        by_index[2],
        exit_code=1,
        message=json.dumps(
            {"error": {"code": "INTERNAL", "message": "S3 reset", "retryable": True}}
        ),
    )
    bad = {
        "error": {"code": "BAD_CSV", "message": "row 1", "retryable": False},
        "range": {"start": 301},
    }
    exports.finish_pod(by_index[3], exit_code=2, message=json.dumps(bad))
    again = wait_for(
        "index 2 retried",
        lambda: [p for p in _pods(exports, "big", "ranges") if _index(p) == 2] or None,
    )
    exports.run_pod(again[0])
    for index in (0, 1):
        exports.finish_pod(by_index[index], exit_code=0, message=_range_result(index))
    exports.finish_pod(again[0], exit_code=0, message=_range_result(2))
    failed = wait_for(
        "RangesFailed",
        lambda: next(
            (c for c in exports.status("big").get("conditions", []) if c["type"] == "RangesFailed"),
            None,
        ),
    )
    assert "ranges 3 failed" in failed["message"]
    assert exports.status("big")["phase"] == "Running"

    # The finishing step gets every range's result or error, and its result is the export's.
    [finish] = wait_for("the finish pod", lambda: _pods(exports, "big", "finish") or None)
    results = json.loads(finish.metadata.annotations["exportjobs.dev/range-results"])
    assert finish.metadata.annotations["exportjobs.dev/source-etag"] == '"etag-1"'
    assert finish.metadata.annotations["exportjobs.dev/source-version-id"] == "v-1"
    assert "EXPORTJOBS_SOURCE_ETAG" in _env_from(finish)
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[3]["payload"] == bad and results[2]["payload"] == json.loads(_range_result(2))
    # The ranges Job is over: the finishing pod holds one slot, so the queued export gets one.
    exports.wait_phase("after", "Pending")
    exports.run_pod(finish)
    result = {
        "uri": "s3://out/reports/big/big.csv",
        "bytes": 100,
        "rows": 40,
        "sha256": "cd" * 32,
        "format": "csv",
        "split": {"ranges": 4, "redone": [3], "partBytes": [25, 25, 25, 25]},
    }
    exports.finish_pod(finish, exit_code=0, message=json.dumps(result))
    status = exports.wait_phase("big", "Succeeded")
    assert status["result"] == {
        k: result[k] for k in ("uri", "bytes", "rows", "sha256", "format", "split")
    }
    assert _job(exports, "export-big-clean") is None  # nothing to clean after a success


def test_cancelling_a_split_export_ends_every_index_and_cleans_up(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(max_running=4)
    exports.create("cut", parallelism=3, format="parquet")
    job = wait_for("the ranges Job", lambda: exports.job("cut"))
    assert job.spec.suspend and job.spec.parallelism == 3
    # Parquet: no upload to open, but the version is pinned as for every format.
    resumed = _prepare(exports, "cut", _pinned(None))
    assert resumed.spec.template.metadata.annotations["exportjobs.dev/source-etag"] == '"etag-1"'
    assert resumed.spec.template.metadata.annotations["exportjobs.dev/upload-id"] == ""
    ranges = wait_for(
        "3 range pods", lambda: (p := _pods(exports, "cut", "ranges")) and len(p) == 3 and p
    )
    for pod in ranges[:2]:
        exports.run_pod(pod)
    exports.wait_phase("cut", "Running")
    exports.patch_spec("cut", {"cancel": True})
    status = exports.wait_phase("cut", "Cancelled")
    assert status["error"]["code"] == "CANCELLED"
    # Every index ends: the ranges Job goes (its pods with it) ...
    wait_for("the ranges Job gone", lambda: exports.job("cut") is None)
    # ... and once no range pod is left, the clean-up step runs with what it needs.
    clean = wait_for("the clean Job", lambda: _job(exports, "export-cut-clean"))
    env = {e.name: e.value for e in clean.spec.template.spec.containers[0].env}
    assert env["EXPORTJOBS_RANGE_COUNT"] == "3"
    assert clean.spec.template.spec.containers[0].args == ["--clean-ranges"]
    wait_for("no range pod left", lambda: not _pods(exports, "cut", "ranges", pending=False))
    [pod] = wait_for("the clean pod", lambda: _pods(exports, "cut", "clean") or None, timeout=60)
    exports.run_pod(pod)
    exports.finish_pod(pod, exit_code=0, message=json.dumps({"cleaned": 3}))
    wait_for(
        "the clean Job complete",
        lambda: any(
            c.type == "Complete" and c.status == "True"
            for c in (_job(exports, "export-cut-clean").status.conditions or [])
        ),
    )
    assert exports.status("cut")["phase"] == "Cancelled"


def _range_pods(exports: Exports, name: str, count: int) -> list[Any]:
    return wait_for(
        f"{count} range pods of {name}",
        lambda: (p := _pods(exports, name, "ranges")) and len(p) == count and p,
    )


@pytest.mark.usefixtures("allow_loopback")
def test_a_split_export_calls_back_once_and_a_changed_source_fails_it_once(
    exports: Exports, operator: OperatorProcess, receiver: Receiver, secrets_dir: Path
) -> None:
    """Issue 23: one callback for the export, not one per range pod, step or retry; a range
    that meets the source changed since `prepare` pinned it (exit 3, SOURCE_CHANGED) fails the
    export with that code, once, and the clean-up step runs."""
    start(operator, secrets_dir, max_running=6)
    exports.create("ok", parallelism=2, notify={"url": receiver.url("ok")})
    exports.create("moved", parallelism=2, format="jsonl", notify={"url": receiver.url("moved")})

    _prepare(exports, "ok", _pinned("upload-ok"))
    first, second = sorted(_range_pods(exports, "ok", 2), key=_index)
    for pod in (first, second):
        exports.run_pod(pod)
    retried = {"error": {"code": "INTERNAL", "message": "S3 reset", "retryable": True}}
    exports.finish_pod(second, exit_code=1, message=json.dumps(retried))
    [again] = wait_for(
        "index 1 retried",
        lambda: [p for p in _pods(exports, "ok", "ranges") if _index(p) == 1] or None,
    )
    exports.run_pod(again)
    exports.finish_pod(first, exit_code=0, message=_range_result(0))
    exports.finish_pod(again, exit_code=0, message=_range_result(1))
    [finish] = wait_for("the finish pod", lambda: _pods(exports, "ok", "finish") or None)
    exports.run_pod(finish)
    result = {
        "uri": "s3://out/reports/ok/big.csv",
        "bytes": 50,
        "rows": 20,
        "sha256": "cd" * 32,
        "format": "csv",
        "split": {"ranges": 2, "redone": [], "partBytes": [25, 25]},
    }
    exports.finish_pod(finish, exit_code=0, message=json.dumps(result))
    exports.wait_phase("ok", "Succeeded")

    _prepare(exports, "moved", _pinned("upload-moved", etag='"etag-2"'))
    zero, one = sorted(_range_pods(exports, "moved", 2), key=_index)
    for pod in (zero, one):
        exports.run_pod(pod)
    exports.finish_pod(zero, exit_code=0, message=_range_result(0))
    changed = {
        "error": {
            "code": "SOURCE_CHANGED",
            "message": "reading s3://src/in.csv: the object changed",
            "retryable": False,
        }
    }
    exports.finish_pod(one, exit_code=3, message=json.dumps(changed))
    failed = exports.wait_phase("moved", "Failed")
    assert failed["error"]["code"] == "SOURCE_CHANGED", failed
    assert "changed" in failed["error"]["message"]
    clean = wait_for("the clean Job", lambda: _job(exports, "export-moved-clean"))
    assert clean.spec.template.metadata.annotations["exportjobs.dev/upload-id"] == "upload-moved"
    assert _job(exports, "export-moved-finish") is None  # nothing to finish: no result

    for name in ("ok", "moved"):
        note = notification(exports, name, "Delivered")
        assert note["attempts"] == 1 and note["lastStatusCode"] == 204
    time.sleep(3)  # the clean-up step, the last status writes: nothing more arrives
    for name, outcome in (("ok", "succeeded"), ("moved", "failed")):
        (delivery,) = receiver.deliveries(name)
        assert_signed(delivery)
        assert delivery.event["type"] == f"dev.exportjobs.export.{outcome}"
        assert delivery.event["data"]["status"] == exports.status(name)["phase"]
    assert receiver.deliveries("ok")[0].event["data"]["result"]["rows"] == 20
    assert receiver.deliveries("moved")[0].event["data"]["error"]["code"] == "SOURCE_CHANGED"
