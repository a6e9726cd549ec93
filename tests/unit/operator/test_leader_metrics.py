"""The leader gauge, and queue figures that read 0 on a standby."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from export_operator.controller import metrics


def _value(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_a_standby_exports_no_stale_queue_and_says_it_is_not_leading() -> None:
    leading = asyncio.Event()
    metrics.follow_leadership(leading)
    leading.set()
    metrics.QUEUE_DEPTH.set(7)
    metrics.RUNNING_JOBS.set(3)
    assert _value("exportjobs_operator_leader") == 1.0
    assert _value("exportjobs_operator_queue_depth") == 7.0
    assert _value("exportjobs_operator_running_jobs") == 3.0
    leading.clear()  # the Lease went to another replica
    assert _value("exportjobs_operator_leader") == 0.0
    assert _value("exportjobs_operator_queue_depth") == 0.0
    assert _value("exportjobs_operator_running_jobs") == 0.0
    leading.set()  # leading again: the figures its next admission pass sets
    metrics.QUEUE_DEPTH.set(2)
    assert _value("exportjobs_operator_queue_depth") == 2.0
