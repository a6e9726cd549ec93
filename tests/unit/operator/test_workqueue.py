"""The work queue on its own: dedup, one worker per key, backoff, forget, delays, shutdown."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_operator.controller.workqueue import (
    QueueShutDownError,
    Result,
    WorkQueue,
    run_worker,
)
from export_processor.common import Backoff


async def test_a_key_added_many_times_is_queued_once_in_fifo_order() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "b", "a"]:
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_added_while_processed_waits_for_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # an event during the reconcile
    queue.add("a")
    assert len(queue) == 0, "not handed to a second worker while the first holds it"
    queue.done("a")
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_never_two_workers_on_one_key() -> None:
    queue: WorkQueue[int] = WorkQueue()
    busy: set[int] = set()
    overlaps = 0
    runs = 0

    async def reconcile(key: int) -> Result:
        nonlocal overlaps, runs
        if key in busy:
            overlaps += 1
        busy.add(key)
        runs += 1
        await asyncio.sleep(0.001)
        queue.add(key % 3)  # events arrive while reconciling
        busy.discard(key)
        return Result()

    workers = [asyncio.create_task(run_worker(queue, reconcile)) for _ in range(8)]
    for i in range(200):
        queue.add(i % 5)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    queue.shut_down()
    await asyncio.gather(*workers)
    assert overlaps == 0
    assert runs > 5


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    backoff = Backoff(base=0.5, cap=8.0, jitter=0.2)
    plain = [backoff.delay(n, rand=lambda: 0.0) for n in range(1, 8)]
    assert plain == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.delay(3, rand=lambda: 1.0) == pytest.approx(2.4)


@given(failures=st.integers(min_value=0, max_value=10_000), r=st.floats(0, 1))
def test_backoff_is_always_within_base_and_cap_plus_jitter(failures: int, r: float) -> None:
    backoff = Backoff(base=0.05, cap=30.0, jitter=0.5)
    delay = backoff.delay(failures, rand=lambda: r)
    assert 0.05 <= delay <= 45.0


async def test_failures_back_off_per_key_and_success_forgets() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=Backoff(base=0.01, cap=0.04, jitter=0.0))
    calls: list[tuple[str, float]] = []
    failing = {"bad": 4}
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> Result:
        calls.append((key, loop.time()))
        if failing.get(key, 0) > 0:
            failing[key] -= 1
            raise RuntimeError("API down")
        return Result()

    errors: list[float] = []
    worker = asyncio.create_task(
        run_worker(queue, reconcile, on_error=lambda k, e, d: errors.append(d))
    )
    queue.add("bad")
    queue.add("good")
    await asyncio.sleep(0.3)
    queue.shut_down()
    await worker
    assert errors == [0.01, 0.02, 0.04, 0.04], "doubling, capped"
    bad = [t for k, t in calls if k == "bad"]
    assert len(bad) == 5, "retried until it succeeded, then left alone"
    gaps = [b - a for a, b in itertools.pairwise(bad)]
    assert all(gap >= want * 0.9 for gap, want in zip(gaps, errors, strict=True))
    assert [k for k, _ in calls].count("good") == 1, "another key's failures do not touch it"
    assert queue.failures("bad") == 0, "forgotten on success"


async def test_an_event_during_backoff_reconciles_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=Backoff(base=10.0, cap=10.0, jitter=0.0))
    queue.add("a")
    assert await queue.get() == "a"
    assert queue.add_rate_limited("a") == 10.0
    queue.done("a")
    assert len(queue) == 0
    queue.add("a")  # e.g. the watch shows a change: no need to wait for the backoff
    assert len(queue) == 1


async def test_add_after_keeps_the_earliest_and_requeue_after_is_honoured() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 5.0)
    queue.add_after("a", 0.01)
    queue.add_after("a", 3.0)
    got = await asyncio.wait_for(queue.get(), timeout=1)
    assert got == "a"
    queue.done("a")
    seen: list[str] = []

    async def reconcile(key: str) -> Result:
        seen.append(key)
        return Result(requeue_after=0.01) if len(seen) < 3 else Result()

    worker = asyncio.create_task(run_worker(queue, reconcile))
    queue.add("b")
    await asyncio.sleep(0.2)
    queue.shut_down()
    await worker
    assert seen == ["b", "b", "b"]


async def test_discard_cancels_a_pending_retry() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=Backoff(base=0.01, cap=0.01, jitter=0.0))
    queue.add_rate_limited("gone")
    queue.discard("gone")
    await asyncio.sleep(0.05)
    assert len(queue) == 0
    assert queue.failures("gone") == 0


async def test_shutdown_wakes_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    with pytest.raises(QueueShutDownError):
        await waiter
    queue.add("a")
    assert len(queue) == 0


async def test_wait_idle_returns_once_the_key_in_hand_is_done_after_shut_down() -> None:
    """Manager.stop waits for this before cancelling the workers: a callback attempt in hand
    gets its state written (cancelled mid-way, the next leader sent it again)."""
    queue: WorkQueue[str] = WorkQueue()
    finished: list[str] = []
    started = asyncio.Event()

    async def slow(key: str) -> Result:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(key)
        return Result()

    await queue.wait_idle()  # nothing in hand: at once
    worker = asyncio.create_task(run_worker(queue, slow))
    queue.add("a")
    await started.wait()
    queue.add("b")  # waiting, not in hand: not processed after the shut-down
    queue.shut_down()
    idle = asyncio.create_task(queue.wait_idle())
    await asyncio.sleep(0.05)
    assert not idle.done() and finished == []
    await asyncio.wait_for(idle, 2)
    assert finished == ["a"]
    await asyncio.wait_for(worker, 1)  # and the worker ends by itself


async def test_urgent_keys_go_before_the_others_first_in_first_out() -> None:
    """Admissions of two passes come out in the order they were admitted (the second pass's went
    ahead of the first's, one at a time at the head, and in a burst some waited 15 s)."""
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "c"]:
        queue.add(key)
    for key in ["x1", "x2", "c"]:  # one pass; "c" already waits: it moves to the urgent lane
        queue.add(key, urgent=True)
    queue.add("d")
    for key in ["y1", "y2", "x1"]:  # the next pass; x1 already waits there: it keeps its place
        queue.add(key, urgent=True)
    assert len(queue) == 8
    got = [await queue.get() for _ in range(8)]
    assert got == ["x1", "x2", "c", "y1", "y2", "a", "b", "d"]


async def test_a_key_made_urgent_while_a_worker_holds_it_goes_to_the_urgent_lane_after() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("held")
    assert await queue.get() == "held"
    queue.add("a")
    queue.add("held", urgent=True)
    assert len(queue) == 1, "not handed out while held"
    queue.done("held")
    assert await queue.get() == "held", "ahead of a"
    queue.done("held")
    queue.add("held")  # not urgent this time: the urgency was served
    assert [await queue.get(), await queue.get()] == ["a", "held"]
