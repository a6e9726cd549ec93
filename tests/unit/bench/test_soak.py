"""bench/soak.py's figures without a cluster: the API server's object counts, the RSS slope and
a report's verdicts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.hack_modules import load

soak = load("soak", "bench")
MiB = 1024 * 1024


def test_object_counts_read_both_metric_names() -> None:
    metrics = "\n".join(
        [
            "# HELP apiserver_storage_objects ...",
            'apiserver_storage_objects{resource="jobs.batch"} 12',
            'apiserver_storage_objects{resource="configmaps"} 40',
            'apiserver_resource_objects{group="exportjobs.dev",resource="exportjobs"} 3',
            'apiserver_resource_objects{group="",resource="pods"} 7',
        ]
    )
    assert soak.object_counts(metrics) == {
        "jobs.batch": 12,
        "exportjobs.exportjobs.dev": 3,
        "pods": 7,
    }


def test_slope_is_mib_per_hour_by_least_squares() -> None:
    flat = [(t, 100 * MiB) for t in range(0, 3600, 60)]
    assert soak.slope_mib_per_hour(flat) == 0
    growing = [(t, 100 * MiB + t * 10 * MiB // 3600) for t in range(0, 3600, 60)]
    assert abs(soak.slope_mib_per_hour(growing) - 10) < 0.1
    assert soak.slope_mib_per_hour(flat[:2]) is None


def _target(tmp_path: Path) -> Any:
    return soak.Target(
        url=lambda: "http://127.0.0.1:1",
        token="t",
        namespace="ns",
        kubectl=lambda *a: "{}",
        s3=None,
        input_bucket="b",
        callback_url="http://cb",
        callback_events=tmp_path / "events.jsonl",
    )


def test_a_report_fails_on_a_lost_export_a_doubled_callback_and_a_5xx(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text(
        '{"status": 204, "event": {"subject": "a"}}\n'
        '{"status": 500, "event": {"subject": "b"}}\n'
        '{"status": 204, "event": {"subject": "b"}}\n'
        '{"status": 204, "event": {"subject": "b"}}\n'
    )
    run = soak.Soak(
        _target(tmp_path),
        seconds=60,
        window_seconds=30,
        failover_seconds=600,
        big_bytes=0,
        big_every_seconds=60,
    )
    run.exports = {
        "a": soak.Export("a", "small", 0.0, final="Succeeded"),
        "b": soak.Export("b", "small", 0.0, final="Succeeded"),
        "c": soak.Export("c", "small", 0.0),
    }
    run.server_errors = ["POST /v1/exports: 500"]
    report = run.report()
    assert report["lost"] == 1 and report["doubled"] == 1 and report["server_errors"] == 1
    assert len(report["failures"]) == 3
    run.exports["c"].final = "Cancelled"
    (tmp_path / "events.jsonl").write_text(
        "".join(f'{{"status": 204, "event": {{"subject": "{i}"}}}}\n' for i in "abc")
    )
    run.server_errors = []
    assert run.report()["failures"] == []


def _soak(tmp_path: Path) -> Any:
    return soak.Soak(
        _target(tmp_path),
        seconds=3600,
        window_seconds=300,
        failover_seconds=600,
        big_bytes=0,
        big_every_seconds=60,
        warmup_seconds=600,
    )


def test_the_rss_slope_follows_the_leader_across_failovers_not_one_pods_takeover(
    tmp_path: Path,
) -> None:
    """The hour at load 24 failed on per-pod slopes of 95-446 MiB/hour: a standby at 60 MiB that
    took over rose to 100 MiB within its ten minutes as leader. The component's memory did not
    grow: the leader's RSS across the hour is flat."""
    run = _soak(tmp_path)
    for start, end, pod in ((0, 1800, "a"), (1800, 3600, "b")):
        standby = [(float(t), 60 * MiB) for t in range(0, start, 20)]
        leading = [(float(t), 100 * MiB) for t in range(start, end, 20)]
        run.rss_samples[("operator", pod)] = standby + leading
    assert run.report()["rss_slope_mib_per_hour_per_pod"]["operator/b"] > 20
    assert run.component_slopes() == {"operator": 0.0}
    assert not [f for f in run.report()["failures"] if "RSS" in f]


def test_a_leak_across_failovers_still_fails(tmp_path: Path) -> None:
    run = _soak(tmp_path)
    for start, end, pod in ((0, 1800, "a"), (1800, 3600, "b")):
        run.rss_samples[("operator", pod)] = [
            (float(t), 100 * MiB + t * 40 * MiB // 3600) for t in range(start, end, 20)
        ]
    assert abs(run.component_slopes()["operator"] - 40) < 1
    assert [f for f in run.report()["failures"] if "RSS grows" in f]


def _terms(run: Any, levels: list[int], *, leak_per_hour: int = 0) -> None:
    """Six ten-minute leader terms (a failover every 600 s): each new leader fills its caches
    for two minutes from 60 MiB, then holds its own level (+ `leak_per_hour`)."""
    run.failover_times = [600.0 * i for i in range(1, len(levels))]
    for i, level in enumerate(levels):
        start = 600 * i
        samples = []
        for t in range(start, start + 600, 20):
            warm = min(1.0, (t - start) / 120)
            leak = (t - start) * leak_per_hour // 3600
            samples.append((float(t), (60 + int(warm * (level - 60)) + leak) * MiB))
        run.rss_samples[("operator", f"leader-{i}")] = samples


def test_each_new_leader_settling_at_its_own_level_is_not_growth(tmp_path: Path) -> None:
    """The hour of 2026-12-07 failed at 24.2 MiB/hour on the operator: its six leaders settled at
    140, 125, 138, 140, 140 and 145 MiB and stayed there, a fit across the terms read the
    second one's low level as growth. Within each term, once warm, nothing grew."""
    run = _soak(tmp_path)
    _terms(run, [140, 125, 138, 140, 140, 145])
    assert run.component_slopes() == {"operator": 0.0}
    assert not [f for f in run.report()["failures"] if "RSS" in f]
    assert run.report()["failover_seconds"] == [600, 1200, 1800, 2400, 3000]


def test_a_leak_within_each_leaders_term_fails(tmp_path: Path) -> None:
    run = _soak(tmp_path)
    _terms(run, [140, 125, 138, 140, 140, 145], leak_per_hour=30)
    assert 25 < run.component_slopes()["operator"] < 35
    assert [f for f in run.report()["failures"] if "RSS grows" in f]


def _soak_with(tmp_path: Path, kubectl: Any) -> Any:
    target = _target(tmp_path)
    target.kubectl = kubectl
    return soak.Soak(
        target,
        seconds=60,
        window_seconds=30,
        failover_seconds=600,
        big_bytes=0,
        big_every_seconds=60,
    )


def _item(name: str, phase: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase} if phase else {}}


def test_an_export_seen_final_only_in_the_list_is_not_lost(tmp_path: Path) -> None:
    """The hour's run of 2026-12-07 counted 205 exports lost that had Succeeded: the sampled GETs
    never reached them before retention deleted them or the drain ended."""
    run = _soak(tmp_path)
    run.exports = {i: soak.Export(i, "small", 0.0) for i in ("a", "b", "c")}
    run.mark_listed(
        [_item("a", "Succeeded"), _item("b", "Running"), _item("c", None), _item("x", "Failed")]
    )
    assert {i: e.final for i, e in run.exports.items()} == {
        "a": "Succeeded",
        "b": None,
        "c": None,
    }
    assert sum(w.finished for w in run.windows) == 1
    run.mark_listed([_item("a", "Succeeded"), _item("b", "Cancelled"), _item("c", "Failed")])
    assert sum(w.finished for w in run.windows) == 3  # each counted once
    report = run.report()
    assert report["lost"] == 0 and report["phases"] == {
        "Succeeded": 1,
        "Cancelled": 1,
        "Failed": 1,
    }


def test_sweeps_list_until_nothing_is_open_and_survive_a_failed_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    def kubectl(*args: str) -> str:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("the API server is restarting")
        return json.dumps({"items": [_item("a", "Succeeded")]})

    run = _soak_with(tmp_path, kubectl)
    run.exports = {"a": soak.Export("a", "small", 0.0)}
    monkeypatch.setattr(soak, "SWEEP_SECONDS", 0.01)

    async def drain() -> None:
        run._stop.set()
        run._drain_deadline = time.monotonic() + 30
        await asyncio.wait_for(run.sweeps(), 10)

    asyncio.run(drain())
    assert calls == [("-n", "ns", "get", "exportjobs", "-o", "json")] * 2
    assert run.exports["a"].final == "Succeeded"
    assert run.transport_errors == {"sweep RuntimeError": 1}


def _pod(uid: str, export: str, step: str = "", index: str = "") -> dict[str, Any]:
    labels = {"exportjobs.dev/export": export}
    if step:
        labels["exportjobs.dev/step"] = step
    annotations = {soak.COMPLETION_INDEX: index} if index else {}
    return {
        "metadata": {
            "uid": uid,
            "name": f"pod-{uid}",
            "labels": labels,
            "annotations": annotations,
        },
        "status": {"phase": "Succeeded", "containerStatuses": []},
    }


def test_a_run_twice_is_two_pods_of_one_step_and_index_of_this_soaks_exports(
    tmp_path: Path,
) -> None:
    """A split export's prepare, ranges and finish pods are one run each (an e2e run where the
    split tests went before the soak reported their exports as run twice); an export of another
    test in the namespace is not the soak's to judge."""
    pods = [
        _pod("1", "whole"),
        _pod("2", "split", "prepare"),
        _pod("3", "split", "ranges", "0"),
        _pod("4", "split", "ranges", "1"),
        _pod("5", "split", "finish"),
        _pod("6", "other", "ranges", "0"),
        _pod("7", "other", "ranges", "0"),  # twice, but not this soak's export
        _pod("8", "twice"),
        _pod("9", "twice"),
        _pod("10", "range-twice", "ranges", "1"),
        _pod("11", "range-twice", "ranges", "1"),
    ]
    (tmp_path / "events.jsonl").write_text("")
    target = _target(tmp_path)
    target.callback_url = None
    target.kubectl = lambda *a: json.dumps({"items": pods}) if "pods" in a else "{}"
    run = _soak(tmp_path)
    run.t = target
    run.exports = {
        k: soak.Export(k, "small", 0.0, final="Succeeded")
        for k in ("whole", "split", "twice", "range-twice")
    }
    run._watch_pods()
    report = run.report()
    assert report["doubled"] == 2
    (failure,) = report["failures"]
    assert "2 exports ran twice: ['range-twice', 'twice']" in failure
