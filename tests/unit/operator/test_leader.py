"""Leader election on its own, against the in-memory API (resourceVersion conflicts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from export_operator.controller.leader import LeaderElector, LeaseConfig
from export_operator.kube import KubeError
from tests.support.fake_kube import FakeKube

LEASE = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"


def holder(kube: FakeKube) -> str:
    return str(kube.objects[LEASE]["spec"]["holderIdentity"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: FakeKube, clock: Clock, identity: str) -> LeaderElector:
    config = LeaseConfig(
        namespace="ns", name="l", identity=identity, lease_duration=10, renew_deadline=7
    )
    started: list[str] = []
    e = LeaderElector(
        leases,
        config,
        on_started=lambda: started.append(identity),
        monotonic=clock,
    )
    e.started = started  # type: ignore[attr-defined]
    return e


async def test_one_leads_the_other_stands_by_then_takes_over_after_the_duration() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    await a.try_acquire_or_renew()
    await b.try_acquire_or_renew()
    assert a.leading.is_set() and not b.leading.is_set()
    assert holder(leases) == "a"
    for _ in range(5):  # a renews every 2 s: b keeps standing by
        clock.now += 2
        await a.try_acquire_or_renew()
        await b.try_acquire_or_renew()
        assert not b.leading.is_set()
    clock.now += 9  # a is dead: no renewal for 9 s, still within the 10 s duration
    await b.try_acquire_or_renew()
    assert not b.leading.is_set()
    clock.now += 2
    await b.try_acquire_or_renew()
    assert b.leading.is_set(), "takes over once no renewal was seen for the duration"
    assert holder(leases) == "b"
    assert leases.objects[LEASE]["spec"]["leaseTransitions"] == 1
    assert b.started == ["b"]  # type: ignore[attr-defined]
    # a comes back (e.g. it was paused): it sees b's lease and does not act.
    await a.try_acquire_or_renew()
    assert not a.leading.is_set()


async def test_two_racing_for_an_expired_lease_give_one_winner() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    results = await asyncio.gather(
        a.try_acquire_or_renew(), b.try_acquire_or_renew(), return_exceptions=True
    )
    assert sum(isinstance(r, KubeError) for r in results) == 1
    assert a.leading.is_set() != b.leading.is_set()


async def test_the_leader_stops_acting_when_it_cannot_renew_and_resumes_without_restart() -> None:
    leases, clock = FakeKube(), Clock()
    config = LeaseConfig(
        namespace="ns", name="l", identity="a", renew_deadline=7, retry_period=0.01
    )
    a = LeaderElector(leases, config, monotonic=clock)
    task = asyncio.create_task(a.run())
    await _eventually(a.leading.is_set)
    leases.down = True
    clock.now += 8  # past the 7 s renew deadline
    await _eventually(lambda: not a.leading.is_set(), "no renewal: no longer acting")
    leases.down = False
    await _eventually(a.leading.is_set, "its own lease: renewed and acting again")
    await a.release()
    assert holder(leases) == ""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _eventually(condition: Callable[[], bool], what: str = "") -> None:
    """Within 5 s of real time (the retry period is 10 ms; a loaded machine may be slow)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what or "condition not met within 5 s")


async def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    await a.try_acquire_or_renew()
    await b.try_acquire_or_renew()
    await a.release()
    await b.try_acquire_or_renew()
    assert b.leading.is_set()
