"""Issue 24: admission is fair between owners and first in, first out within each, in the order
the webhook accepted the exports (nanoseconds), not the one-second creation time."""

from __future__ import annotations

import pytest

from export_operator.controller.admission import FairShare, Fifo, OwnerShare, plan_admission
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView
from export_operator.resource import ANNOTATION_SUBMITTED
from tests.support.factories import export_body

SECOND = "2026-01-01T00:00:00Z"
T0 = 1_767_225_600_000_000_000  # that second, in nanoseconds


def owned(name: str, owner: str, submitted: int, *, running: bool = False) -> ExportView:
    body = export_body(
        name,
        created=SECOND,
        spec={"source": {"uri": "s3://src/in.csv"}, "format": "csv", "owner": owner},
        annotations={ANNOTATION_SUBMITTED: f"{submitted:019d}"},
        status={"phase": "Running", "jobName": f"export-{name}"} if running else None,
    )
    return ExportView.from_body(body)


def test_within_a_second_fifo_follows_submission_not_the_name() -> None:
    exports = [owned(f"z{i:02d}" if i % 2 else f"a{i:02d}", "a", T0 + (20 - i)) for i in range(20)]
    plan = plan_admission(exports=exports, jobs={}, in_flight=set(), max_running=0)
    submitted = [e.submitted_ns for e in plan.admit]
    assert submitted == sorted(submitted)  # names alone would interleave a.. and z..


def test_one_owners_backlog_does_not_hold_back_another_owner() -> None:
    backlog = [owned(f"a-{i:04d}", "team-a", T0 + i) for i in range(2000)]
    holding = [owned(f"run-{i}", "team-a", T0 - 100 + i, running=True) for i in range(10)]
    late = owned("b-0001", "team-b", T0 + 10_000)
    policy = FairShare()
    # One slot frees: B's export, posted after all 2,000 of A's, gets it.
    plan = plan_admission(
        exports=[*backlog, late], jobs={}, in_flight=set(), max_running=1, policy=policy,
        holding=holding,
    )  # fmt: skip
    assert [e.name for e in plan.admit] == ["b-0001"]
    assert plan.positions[("ns", "a-0000")] == 1
    # FIFO would have put it at position 2,001.
    fifo = plan_admission(exports=[*backlog, late], jobs={}, in_flight=set(), max_running=1)
    assert fifo.positions[("ns", "b-0001")] == 2000


def test_weights_and_caps_share_the_slots() -> None:
    a = [owned(f"a-{i:02d}", "a", T0 + i) for i in range(30)]
    b = [owned(f"b-{i:02d}", "b", T0 + 100 + i) for i in range(30)]
    policy = FairShare({"a": OwnerShare(weight=2), "b": OwnerShare(max_running=3)})
    order = policy.order([*a, *b], holding=[])
    first_nine = [e.owner for e in order[:9]]
    assert first_nine.count("a") == 6 and first_nine.count("b") == 3
    assert [e.owner for e in order[9:]].count("b") == 27  # b is at its cap: the rest waits
    within = [e.name for e in order if e.owner == "a"]
    assert within == sorted(within)


def test_fifo_without_owners_is_unchanged() -> None:
    exports = [owned(f"e{i:02d}", "", T0 + i) for i in range(10)]
    assert FairShare().order(exports, holding=[]) == Fifo().order(exports, holding=[])


def test_owner_shares_come_from_the_settings() -> None:
    settings = OperatorSettings.from_env(
        {"EXPORTJOBS_OPERATOR_OWNER_SHARES": '{"a": {"weight": 3, "maxRunning": 5}}'}
    )
    assert settings.admission.shares == {"a": OwnerShare(weight=3, max_running=5)}
    unset = OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_OWNER_SHARES": '{"b": null}'})
    assert unset.admission.shares == {"b": OwnerShare()}
    for bad, where in (
        ('{"a": {"weight": 0}}', "a.weight"),
        ('{"a": {"cap": 1}}', "a.cap"),
        ('{"a": {"maxRunning": true}}', "a.maxRunning"),
        ("[1]", "OWNER_SHARES"),
        ("{", "OWNER_SHARES"),
    ):
        with pytest.raises(ValueError, match="OWNER_SHARES") as raised:
            OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_OWNER_SHARES": bad})
        assert where in str(raised.value), bad


def test_when_a_slot_frees_the_owner_served_least_recently_goes_first() -> None:
    policy = FairShare()
    first = owned("a-0000", "team-a", T0)
    policy.admitted([first])  # A's first export had the only slot; it has finished now
    backlog = [owned(f"a-{i:04d}", "team-a", T0 + i) for i in range(1, 2000)]
    late = owned("b-0001", "team-b", T0 + 10_000)
    plan = plan_admission(
        exports=[*backlog, late], jobs={}, in_flight=set(), max_running=1, policy=policy
    )
    assert [e.name for e in plan.admit] == ["b-0001"]
