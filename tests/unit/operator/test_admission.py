"""Admission: the limit, FIFO order, and what counts as running."""

from __future__ import annotations

from export_operator.controller.admission import Fifo, plan_admission, waits_for_job
from export_operator.controller.snapshots import ExportView
from tests.support.factories import condition, export, job


def _exports(n: int) -> list:
    # Created in reverse name order, several per second: creation time decides, then the name.
    return [export(f"e{i:02d}", created=f"2026-01-01T00:00:{59 - i // 3:02d}Z") for i in range(n)]


def test_fifo_by_creation_time_then_name() -> None:
    order = [e.name for e in Fifo().order(_exports(6), holding=[])]
    assert order == ["e03", "e04", "e05", "e00", "e01", "e02"]


def test_limit_admits_the_head_and_numbers_the_rest() -> None:
    plan = plan_admission(exports=_exports(6), jobs={}, in_flight=set(), max_running=2)
    assert [e.name for e in plan.admit] == ["e03", "e04"]
    assert plan.positions == {
        ("ns", "e05"): 1,
        ("ns", "e00"): 2,
        ("ns", "e01"): 3,
        ("ns", "e02"): 4,
    }


def test_running_jobs_and_in_flight_creations_hold_slots() -> None:
    exports = _exports(6)
    jobs = {("ns", "e03"): job("e03", active=1)}
    plan = plan_admission(exports=exports, jobs=jobs, in_flight={("ns", "e04")}, max_running=3)
    assert plan.running == 2
    assert [e.name for e in plan.admit] == ["e05"]
    assert plan.positions[("ns", "e00")] == 1


def test_finished_or_deleting_jobs_free_their_slot() -> None:
    exports = _exports(3)
    jobs = {
        ("ns", "x"): job("x", succeeded=1, conditions=[condition("Complete")]),
        ("ns", "y"): job("y", active=1, deleting=True),
    }
    plan = plan_admission(exports=exports, jobs=jobs, in_flight=set(), max_running=1)
    assert plan.running == 0
    assert len(plan.admit) == 1


def test_zero_means_no_limit() -> None:
    plan = plan_admission(exports=_exports(50), jobs={}, in_flight=set(), max_running=0)
    assert len(plan.admit) == 50 and not plan.positions


def test_who_waits_for_a_job() -> None:
    spec = {"source": {"uri": "s3://s/a.csv"}, "format": "csv"}
    assert waits_for_job(export("a"))
    assert waits_for_job(export("a", status={"phase": "Queued", "queuePosition": 1}))
    assert not waits_for_job(export("a", spec={**spec, "cancel": True}))
    assert not waits_for_job(export("a", status={"phase": "Failed"}))
    assert not waits_for_job(export("a", status={"phase": "Pending", "jobName": "export-a"}))
    assert not waits_for_job(export("a", deleting=True))


class _OldestLast:
    """A policy that admits the newest first (any order the policy gives is the plan's)."""

    def order(self, waiting: list[ExportView], *, holding: list[ExportView]) -> list[ExportView]:
        return sorted(waiting, key=lambda e: e.queue_order, reverse=True)


def test_the_policy_decides_who_gets_the_free_slots() -> None:
    plan = plan_admission(
        exports=_exports(6), jobs={}, in_flight=set(), max_running=2, policy=_OldestLast()
    )
    assert [e.name for e in plan.admit] == ["e02", "e01"]
    assert list(plan.positions) == [("ns", "e00"), ("ns", "e05"), ("ns", "e04"), ("ns", "e03")]
