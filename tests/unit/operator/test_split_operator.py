"""The operator's side of split exports: when to split, the Jobs, the slots, the status."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_operator.controller.admission import plan_admission
from export_operator.controller.jobs import JobFactory
from export_operator.controller.outcomes import Watchdog
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import JobView, PodView
from export_operator.controller.split_jobs import results_document, resume_patch, step_job
from export_operator.controller.split_plan import (
    NOT_PREPARED,
    Prepared,
    SplitPlan,
    plan,
    ranges_wanted,
    slots_granted,
    step_job_name,
)
from export_operator.controller.split_status import SPLIT_RULES, summed_progress
from export_operator.controller.split_steps import MAX_REPORTED, prepared_from, range_payloads
from export_operator.controller.status import decide
from export_operator.resource import Phase
from tests.support import factories
from tests.support.factories import condition, export, job_body, pod_body, terminated

GIB = 1 << 30
SETTINGS = OperatorSettings.from_env({}, default_destination_uri="s3://out/reports/")
BEFORE = Path(__file__).parent / "data" / "whole_jobs_before_split.json"


def _view(name: str = "e1", *, size: int | None = None, **spec: Any) -> Any:
    annotations = {"exportjobs.dev/source-size-bytes": str(size)} if size is not None else None
    full = {"source": {"uri": "s3://src/in.csv"}, "format": "csv", **spec}
    return export(name, spec=full, annotations=annotations)


def _manifest(view: Any, slots: int) -> dict[str, Any] | str:
    return asyncio.run(JobFactory(SETTINGS).manifest(view, sized=False, slots=slots))


# -- when to split -------------------------------------------------------------------------------
def test_ranges_wanted_from_the_size_the_request_and_the_cap() -> None:
    assert ranges_wanted(_view(), settings=SETTINGS) == 1  # size unknown
    assert ranges_wanted(_view(size=2 * GIB - 1), settings=SETTINGS) == 1
    assert ranges_wanted(_view(size=2 * GIB), settings=SETTINGS) == 2
    assert ranges_wanted(_view(size=5 * GIB + 1), settings=SETTINGS) == 6
    assert ranges_wanted(_view(size=100 * GIB), settings=SETTINGS) == 8  # the cap
    assert ranges_wanted(_view(parallelism=4), settings=SETTINGS) == 4
    assert ranges_wanted(_view(parallelism=32), settings=SETTINGS) == 8
    assert ranges_wanted(_view(size=100 * GIB, parallelism=1), settings=SETTINGS) == 1
    off = OperatorSettings.from_env({}, split_min_bytes=0)
    assert ranges_wanted(_view(size=100 * GIB), settings=off) == 1
    assert ranges_wanted(_view(parallelism=3), settings=off) == 3
    never = OperatorSettings.from_env({}, split_max_parallelism=1)
    assert ranges_wanted(_view(parallelism=3), settings=never) == 1
    # An Indexed Job names its pods' hosts `<job>-<index>`: long names run whole.
    assert ranges_wanted(_view("x" * 54, parallelism=4), settings=SETTINGS) == 1
    assert ranges_wanted(_view("x" * 53, parallelism=4), settings=SETTINGS) == 4


@given(wanted=st.integers(1, 32), free=st.none() | st.integers(0, 40))
def test_the_slots_granted_never_exceed_what_is_free_nor_what_is_wanted(
    wanted: int, free: int | None
) -> None:
    granted = slots_granted(wanted, free)
    assert 1 <= granted <= wanted
    if free is not None and granted > 1:
        assert granted <= free
    split = plan(wanted, granted)
    assert split.split == (wanted >= 2 and granted >= 2)
    assert split.parallelism <= split.ranges


@given(name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True))
def test_step_job_names_are_distinct_dns_labels(name: str) -> None:
    names = {step_job_name(name, step) for step in ("prepare", "ranges", "finish", "clean")}
    assert len(names) == 4
    assert all(len(n) <= 63 and n[-1].isalnum() for n in names)


# -- the manifests -------------------------------------------------------------------------------
def test_whole_exports_keep_their_job_manifest_byte_for_byte() -> None:
    """The manifest of an export that is not split is the one main built before splitting."""
    before = json.loads(BEFORE.read_text())
    small = export("small", spec={"source": {"uri": "s3://src/in.csv"}, "format": "csv"})
    sized = export(
        "sized",
        spec={
            "source": {"uri": "s3://src/big.csv", "versionId": "v1"},
            "format": "parquet",
            "backoffLimit": 2,
        },
        annotations={"exportjobs.dev/source-size-bytes": str(5 << 30)},
    )
    for view, slots in ((small, 8), (small, 1), (sized, 1)):
        got = json.dumps(_manifest(view, slots), indent=1, sort_keys=True)
        assert got == json.dumps(before[view.name], indent=1, sort_keys=True)


def test_a_split_export_is_an_indexed_job_of_its_ranges() -> None:
    job = _manifest(_view(size=6 * GIB, backoffLimit=2), slots=3)
    assert isinstance(job, dict)
    spec = job["spec"]
    assert job["metadata"]["name"] == "export-e1"
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (6, 3)
    assert spec["backoffLimitPerIndex"] == 2 and "backoffLimit" not in spec
    assert spec["maxFailedIndexes"] == 6
    assert spec["suspend"] is True  # waits for the pinned version and the prepared upload
    actions = {r["action"]: r for r in spec["podFailurePolicy"]["rules"]}
    assert actions["FailJob"]["onExitCodes"]["values"] == [3]
    assert actions["FailIndex"]["onExitCodes"]["values"] == [2]
    assert job["metadata"]["labels"]["exportjobs.dev/step"] == "ranges"
    assert job["metadata"]["annotations"]["exportjobs.dev/ranges"] == "6"
    template = spec["template"]
    assert template["metadata"]["labels"]["exportjobs.dev/step"] == "ranges"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["EXPORTJOBS_RANGE_COUNT"]["value"] == "6"
    assert env["EXPORTJOBS_RANGE_UPLOAD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['exportjobs.dev/upload-id']"
    )
    # Each range is sized from its share of the source, not the whole.
    whole = _manifest(_view(size=6 * GIB), slots=1)
    assert isinstance(whole, dict)
    limit = template["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert (
        limit != whole["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    )


def _env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def _annotated(name: str) -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": f"metadata.annotations['exportjobs.dev/{name}']"}}


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "parquet"])
def test_every_range_reads_the_version_the_prepare_step_pinned(fmt: str) -> None:
    """Issue 23: the ranges Job of every format waits suspended for `prepare`; the ranges and
    the finishing step read the source's ETag and version id from the annotations the operator
    sets from what `prepare` reported (the spec's own `etag`/`versionId` go to `prepare`)."""
    source = {"uri": "s3://src/in.csv", "etag": '"spec"', "versionId": "v0"}
    view = _view(format=fmt, parallelism=4, source=source)
    job = _manifest(view, slots=4)
    assert isinstance(job, dict) and job["spec"]["suspend"] is True
    env = _env(job)
    assert env["EXPORTJOBS_SOURCE_ETAG"] == {
        "name": "EXPORTJOBS_SOURCE_ETAG",
        "valueFrom": _annotated("source-etag"),
    }
    assert env["EXPORTJOBS_SOURCE_VERSION_ID"]["valueFrom"] == _annotated("source-version-id")
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names))  # the spec's plain values are gone, not doubled
    whole = _manifest(view, slots=1)
    assert isinstance(whole, dict)
    prepare = step_job(whole, "prepare", export_name="e1", ranges=4)
    assert _env(prepare)["EXPORTJOBS_SOURCE_ETAG"]["value"] == '"spec"'  # checked by prepare
    assert "annotations" not in prepare["spec"]["template"]["metadata"]
    pinned = Prepared(upload_id="U1", etag='"e1"', version_id="v1")
    finish = step_job(whole, "finish", export_name="e1", ranges=4, prepared=pinned, results="[]")
    annotations = finish["spec"]["template"]["metadata"]["annotations"]
    assert annotations["exportjobs.dev/source-etag"] == '"e1"'
    assert annotations["exportjobs.dev/source-version-id"] == "v1"
    assert _env(finish)["EXPORTJOBS_SOURCE_ETAG"]["valueFrom"] == _annotated("source-etag")
    patch = resume_patch(pinned)
    assert patch["spec"]["suspend"] is False
    resumed = patch["spec"]["template"]["metadata"]["annotations"]
    assert resumed == {
        "exportjobs.dev/upload-id": "U1",
        "exportjobs.dev/source-etag": '"e1"',
        "exportjobs.dev/source-version-id": "v1",
    }
    body = job_body("export-e1") | {"spec": {"template": {"metadata": {"annotations": resumed}}}}
    assert JobView.from_body(body).prepared == pinned
    assert JobView.from_body(job_body("export-e1")).prepared is NOT_PREPARED


def test_one_free_slot_runs_parquet_whole() -> None:
    whole = _manifest(_view(format="parquet", parallelism=4), slots=1)
    assert isinstance(whole, dict) and "completionMode" not in whole["spec"]


def test_the_steps_jobs() -> None:
    view = _view(parallelism=4)
    whole = _manifest(view, slots=1)
    assert isinstance(whole, dict)
    prepare = step_job(whole, "prepare", export_name="e1", ranges=4)
    assert prepare["metadata"]["name"] == "export-e1-prepare"
    assert prepare["spec"]["template"]["spec"]["containers"][0]["args"] == ["--prepare-ranges"]
    clean = step_job(whole, "clean", export_name="e1", ranges=4, prepared=Prepared("U1"))
    container = clean["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--clean-ranges"]
    assert clean["spec"]["template"]["metadata"]["annotations"]["exportjobs.dev/upload-id"] == "U1"
    results = results_document([(1, {"error": {"code": "BAD_CSV"}}), (0, {"uri": "s3://o/k"})])
    finish = step_job(
        whole, "finish", export_name="e1", ranges=4, prepared=Prepared("U1"), results=results
    )
    template = finish["spec"]["template"]
    assert template["metadata"]["annotations"]["exportjobs.dev/range-results"] == results
    assert json.loads(results)[0]["index"] == 0
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    assert env["EXPORTJOBS_RANGE_RESULTS"] == "/etc/exportjobs/ranges/results.json"
    assert {"name": "ranges", "mountPath": "/etc/exportjobs/ranges", "readOnly": True} in (
        template["spec"]["containers"][0]["volumeMounts"]
    )
    assert "args" not in template["spec"]["containers"][0]
    assert "completionMode" not in finish["spec"] and finish["spec"]["backoffLimit"] == 3


# -- admission: a split export holds its pods' slots ---------------------------------------------
def _queue(*wants: int) -> tuple[list[Any], dict[str, int]]:
    views = [
        export(
            f"e{i}",
            created=f"2026-01-01T00:00:0{i}Z",
            spec={"source": {"uri": "s3://s/k"}, "format": "csv"},
        )
        for i in range(len(wants))
    ]
    return views, {v.name: w for v, w in zip(views, wants, strict=True)}


def test_a_split_export_gets_the_free_slots_it_wants_in_fifo_order() -> None:
    views, wanted = _queue(4, 1, 8, 1)
    plan_ = plan_admission(
        exports=views, jobs={}, in_flight=set(), max_running=6, wants=lambda e: wanted[e.name]
    )
    # e0 takes 4, e1 one, e2 wants 8 but gets the last 1: it runs whole; e3 waits.
    assert [e.name for e in plan_.admit] == ["e0", "e1", "e2"]
    assert plan_.slots == {("ns", "e0"): 4}
    assert plan_.positions == {("ns", "e3"): 1}


def test_running_split_jobs_hold_their_parallelism() -> None:
    views, _ = _queue(1, 1, 1)
    ranges = JobView.from_body(job_body("r") | {"spec": {"parallelism": 3, "completions": 5}})
    jobs = {("ns", "r"): ranges}
    plan_ = plan_admission(
        exports=views, jobs=jobs, in_flight={("ns", "f")}, max_running=5,
        granted={("ns", "f"): 2}, wants=lambda e: 1,
    )  # fmt: skip
    assert plan_.running == 5 and not plan_.admit
    plan_ = plan_admission(
        exports=views, jobs=jobs, in_flight=set(), max_running=5, busy=1, wants=lambda e: 1
    )
    assert plan_.running == 4 and [e.name for e in plan_.admit] == ["e0"]


# -- status: one export ---------------------------------------------------------------------------
NOW = dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC)
WATCHDOG = Watchdog(unschedulable_timeout=300, image_pull_timeout=300)


def _ranges_job(failed_indexes: str = "", **kw: Any) -> JobView:
    body = job_body("e1", **kw)
    body["status"]["failedIndexes"] = failed_indexes
    body["metadata"]["labels"]["exportjobs.dev/step"] = "ranges"
    body["metadata"]["annotations"] = {"exportjobs.dev/ranges": "4"}
    body["spec"] = {"parallelism": 2, "completions": 4, "suspend": kw.get("active", 0) == 0}
    return JobView.from_body(body)


def _step(step: str, **kw: Any) -> JobView:
    body = job_body("e1", **kw)
    body["metadata"]["name"] = f"export-e1-{step}"
    body["metadata"]["labels"]["exportjobs.dev/step"] = step
    body["metadata"]["annotations"] = {"exportjobs.dev/ranges": "4"}
    return JobView.from_body(body)


def _pod(name: str, step: str, index: int | None = None, **kw: Any) -> PodView:
    body = pod_body(name, **kw)
    body["metadata"]["labels"]["exportjobs.dev/step"] = step
    if index is not None:
        body["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    return PodView.from_body(body)


def _split_decide(
    job: JobView | None,
    pods: list[PodView],
    steps: dict[str, JobView] | None = None,
    current: dict[str, Any] | None = None,
    cancel: bool = False,
):
    spec = {"source": {"uri": "s3://src/in.csv"}, "format": "csv", "cancel": cancel}
    return decide(
        rules=SPLIT_RULES,
        steps=steps or {},
        export=export("e1", spec=spec),
        current=current or {"phase": "Pending", "jobName": "export-e1"},
        job=job,
        pods=pods,
        now=NOW,
        watchdog=WATCHDOG,
    )


RUNNING = {"running": {"startedAt": "2026-01-01T00:01:00Z"}}
SPLIT_RESULT = {
    "uri": "s3://out/reports/e1/in.csv",
    "bytes": 100,
    "rows": 10,
    "sha256": "cd" * 32,
    "format": "csv",
    "split": {"ranges": 4, "redone": [2], "partBytes": [25, 25, 25, 25]},
}


def test_one_phase_over_the_steps() -> None:
    preparing = _split_decide(
        _ranges_job(),
        [_pod("p", "prepare", state=RUNNING, phase="Running")],
        {"prepare": _step("prepare", active=1)},
    )
    assert preparing.phase is Phase.PENDING
    ranges = [_pod(f"r{i}", "ranges", i, state=RUNNING, phase="Running") for i in range(2)]
    running = _split_decide(_ranges_job(active=2), ranges)
    assert running.phase is Phase.RUNNING
    assert running.message == "converting 4 ranges, 2 at a time"
    # Another range starting, one ending: the same message (no status write per range).
    more = _split_decide(_ranges_job(active=2, succeeded=1), ranges[1:], current=running.status)
    assert more.status["conditions"] == running.status["conditions"]
    done = _split_decide(
        _ranges_job(succeeded=4, conditions=[condition("Complete")]), [], current=running.status
    )
    assert done.phase is Phase.RUNNING and done.message.startswith("finishing")
    finish = _step("finish", succeeded=1, conditions=[condition("Complete")])
    ended = _pod("f", "finish", state=terminated(0, json.dumps(SPLIT_RESULT), "Completed"))
    succeeded = _split_decide(
        _ranges_job(succeeded=4, conditions=[condition("Complete")]),
        [ended],
        {"finish": finish},
        current=done.status,
    )
    assert succeeded.phase is Phase.SUCCEEDED
    assert succeeded.status["result"]["split"] == SPLIT_RESULT["split"]
    assert succeeded.status["result"]["sha256"] == "cd" * 32


def test_the_finishing_pod_is_not_an_attempt_so_it_costs_no_status_patch() -> None:
    """splitbench measured a fourth patch per split export: attempts 9 -> 10 when the finish
    pod appeared."""
    done = _ranges_job(succeeded=4, conditions=[condition("Complete")])
    ranges = [_pod(f"r{i}", "ranges", i, state=terminated(0, "{}", "Completed")) for i in range(4)]
    prepare = [_pod("p", "prepare", state=terminated(0, "{}", "Completed"))]
    before = _split_decide(done, ranges + prepare, current={"phase": "Running"})
    assert before.status["attempts"] == 4
    finish = _pod("f", "finish", state=RUNNING, phase="Running")
    after = _split_decide(
        done, [*ranges, *prepare, finish], {"finish": _step("finish", active=1)}, before.status
    )
    assert after.status == before.status


def test_failed_indexes_are_a_condition_and_the_finishing_steps_to_redo() -> None:
    failed = _ranges_job(
        succeeded=3, failed=2, conditions=[condition("Failed", "FailedIndexes")], failed_indexes="1"
    )
    decision = _split_decide(failed, [], current={"phase": "Running", "jobName": "export-e1"})
    assert decision.phase is Phase.RUNNING
    conds = {c["type"]: c for c in decision.status["conditions"]}
    assert conds["RangesFailed"]["status"] == "True"
    assert "ranges 1 failed" in conds["RangesFailed"]["message"]


def test_a_deadline_or_a_missing_source_fails_the_export() -> None:
    job = _ranges_job(conditions=[condition("Failed", "DeadlineExceeded", "too long")])
    decision = _split_decide(job, [])
    assert (
        decision.phase is Phase.FAILED and decision.status["error"]["code"] == "DEADLINE_EXCEEDED"
    )
    finish = _step("finish", failed=1, conditions=[condition("Failed", "PodFailurePolicy")])
    error = json.dumps({"error": {"code": "BAD_CSV", "message": "row 9", "retryable": False}})
    pods = [_pod("f", "finish", state=terminated(2, error))]
    decision = _split_decide(_ranges_job(succeeded=4), pods, {"finish": finish})
    assert decision.phase is Phase.FAILED and decision.status["error"]["code"] == "BAD_CSV"


def test_a_failed_prepare_step_fails_the_export_and_frees_the_slots() -> None:
    prepare = _step("prepare", failed=1, conditions=[condition("Failed", "PodFailurePolicy")])
    error = json.dumps({"error": {"code": "DESTINATION_NOT_FOUND", "message": "no bucket"}})
    pods = [_pod("p", "prepare", state=terminated(2, error))]
    decision = _split_decide(_ranges_job(), pods, {"prepare": prepare})
    assert decision.phase is Phase.FAILED and decision.delete_job
    assert decision.status["error"]["code"] == "DESTINATION_NOT_FOUND"
    assert decision.status["error"]["message"].startswith("preparing the split export")


def test_cancel_ends_every_index() -> None:
    ranges = [_pod(f"r{i}", "ranges", i, state=RUNNING, phase="Running") for i in range(2)]
    # A range's own result (exit 0) is not the export's: the cancel wins.
    ranges.append(_pod("r3", "ranges", 3, state=terminated(0, json.dumps(SPLIT_RESULT))))
    decision = _split_decide(_ranges_job(active=2), ranges, cancel=True)
    assert decision.phase is Phase.CANCELLED and decision.delete_job


# -- the steps' inputs ---------------------------------------------------------------------------
def test_the_ranges_results_for_the_finishing_step() -> None:
    ok = json.dumps({"uri": "s3://o/k", "range": {"start": 0, "end": 10}})
    bad = json.dumps({"error": {"code": "BAD_CSV", "message": "x"}, "range": {"start": 11}})
    pods = [
        _pod("a", "ranges", 0, state=terminated(1, "log tail, not JSON")),
        _pod("b", "ranges", 0, state=terminated(0, ok, "Completed")),
        _pod("c", "ranges", 1, state=terminated(2, bad)),
        _pod("d", "finish", state=terminated(0, ok, "Completed")),
    ]
    payloads = dict(range_payloads(pods, 3))
    assert payloads[0] == json.loads(ok)
    assert payloads[1] == json.loads(bad)
    assert payloads[2]["error"]["code"] == "INTERNAL"  # no pod left: the finishing step redoes it


def _prepare_pod(message: str) -> Any:
    return _pod("p", "prepare", state=terminated(0, message, "Completed"))


def test_what_the_prepare_step_reported() -> None:
    reported = {"uploadId": "abc", "source": {"etag": '"e"', "versionId": "v1"}}
    assert prepared_from([_prepare_pod(json.dumps(reported))]) == Prepared("abc", '"e"', "v1")
    parquet = {"uploadId": None, "source": {"etag": '"e"'}}
    assert prepared_from([_prepare_pod(json.dumps(parquet))]) == Prepared(etag='"e"')
    hostile = {"uploadId": "a\x00b", "source": {"etag": "x" * 1025, "versionId": 7}}
    assert prepared_from([_prepare_pod(json.dumps(hostile))]) == NOT_PREPARED
    assert prepared_from([_prepare_pod("[1]")]) == NOT_PREPARED
    assert prepared_from([_prepare_pod(json.dumps({"source": "x"}))]) == NOT_PREPARED


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=1100),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=9), inner),
    max_leaves=8,
)


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "uploadId": _JSON,
            "source": _JSON
            | st.fixed_dictionaries({}, optional={"etag": _JSON, "versionId": _JSON}),
        },
    )
)
def test_any_prepare_message_gives_printable_bounded_values_or_none(body: dict[str, Any]) -> None:
    prepared = prepared_from([_prepare_pod(json.dumps(body))])
    for value in (prepared.upload_id, prepared.etag, prepared.version_id):
        assert value == "" or (len(value) <= MAX_REPORTED and value.isprintable())


def test_progress_is_summed_over_the_ranges() -> None:
    status = {
        "progress": {
            "ranges": {
                "0": {"bytesRead": 60, "bytesTotal": 50, "rows": 5},
                "1": {"bytesRead": 20, "bytesTotal": 50, "rows": 2},
            }
        }
    }
    assert summed_progress(status, None) == {
        "bytesRead": 80, "rows": 7, "bytesTotal": 100, "percent": 80,
    }  # fmt: skip
    assert summed_progress(status, 400)["percent"] == 20  # type: ignore[index]
    written = {"progress": {**status["progress"], **summed_progress(status, None)}}  # type: ignore[dict-item]
    assert summed_progress(written, None) is None  # nothing new: no write
    assert summed_progress({"progress": {"bytesRead": 1}}, None) is None  # a whole export's


@pytest.mark.parametrize("split", [SplitPlan(4, 2)])
def test_factories_still_build_whole_pods(split: SplitPlan) -> None:
    assert factories.pod("p").step == "" and factories.pod("p").index is None
    assert factories.job().slots == 1 and split.split
