"""Bursts: one Job per ExportJob across a SIGKILL, and the concurrency limit with FIFO admission
across a restart (the queue lives in the cluster, not in the operator's memory)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.operator_process import (
    Exports,
    JobWatcher,
    Kubelet,
    OperatorProcess,
    create_many,
)
from tests.support.wait import wait_for


def test_sigkill_mid_burst_then_restart_gives_exactly_one_job_each(
    exports: Exports, operator: OperatorProcess
) -> None:
    names = [f"b-{i:03d}" for i in range(120)]
    operator.start(max_running=0)
    # The burst goes on across the kill: the first 40 while the operator runs (it is killed with
    # creations in flight), the other 80 while it is dead. A fast operator can no longer finish
    # the whole burst before the kill lands (seen in CI once the burst path got faster).
    first, rest = names[:40], names[40:]
    with ThreadPoolExecutor(max_workers=1) as background:
        creating = background.submit(create_many, exports, first)
        wait_for("some Jobs", lambda: len(exports.jobs()) >= 15, timeout=60, interval=0.05)
        operator.kill()  # SIGKILL: no clean-up, creations possibly in flight
        creating.result()
    create_many(exports, rest)
    before = {j.metadata.name: j.metadata.uid for j in exports.jobs()}
    assert len(before) < len(names), "the kill came too late to test anything"
    operator.start()
    wait_for("a Job for every ExportJob", lambda: len(exports.jobs()) == len(names), timeout=90)
    time.sleep(2)  # anything doubled or recreated would show now
    jobs = exports.jobs()
    assert sorted(j.metadata.name for j in jobs) == sorted(f"export-{n}" for n in names)
    for job in jobs:
        if job.metadata.name in before:  # not deleted and created again
            assert job.metadata.uid == before[job.metadata.name]
        [owner] = job.metadata.owner_references
        assert job.metadata.name == f"export-{owner.name}"
    statuses = {e["metadata"]["name"]: e.get("status") or {} for e in exports.list()}
    wait_for(
        "every status to name its Job",
        lambda: all(
            (e.get("status") or {}).get("jobName") == f"export-{e['metadata']['name']}"
            for e in exports.list()
        ),
        timeout=30,
    )
    assert len(statuses) == len(names)


def test_limit_5_over_200_exports_fifo_and_all_finish_across_a_restart(
    exports: Exports, operator: OperatorProcess
) -> None:
    limit, count = 5, 200
    names = [f"q-{i:03d}" for i in range(count)]
    operator.start(max_running=limit)
    create_many(exports, names)

    # FIFO: the queue positions follow creation order (names are created in order, per second).
    def positions_settled() -> dict[str, int] | None:
        items = exports.list()
        queued = {
            e["metadata"]["name"]: e["status"]["queuePosition"]
            for e in items
            if (e.get("status") or {}).get("phase") == "Queued"
        }
        return queued if len(queued) == count - limit else None

    queued = wait_for(
        "every ExportJob beyond the limit to be Queued", positions_settled, timeout=60
    )
    by_position = [n for n, _ in sorted(queued.items(), key=lambda kv: kv[1])]
    assert sorted(queued.values()) == list(range(1, count - limit + 1))
    created = {e["metadata"]["name"]: e["metadata"]["creationTimestamp"] for e in exports.list()}
    assert [created[n] for n in by_position] == sorted(created[n] for n in by_position)

    # Watch the Jobs (every state change, not samples) and play the kubelet from a pod watch.
    watcher, kubelet = JobWatcher(exports), Kubelet(exports)
    watcher.start()
    kubelet.start()
    restarted = False
    deadline = time.monotonic() + 240
    try:
        while len(kubelet.done) < count:
            assert kubelet.error is None, kubelet.error
            assert time.monotonic() < deadline, f"only {len(kubelet.done)} of {count} finished"
            if not restarted and len(kubelet.done) >= count // 2:
                operator.kill()  # the queue must survive in the cluster
                operator.start()
                restarted = True
            time.sleep(0.2)
    finally:
        kubelet.stop()
        watcher.stop()
    assert watcher.error is None, watcher.error
    most_running = watcher.most_running
    admitted_order = watcher.admitted_order
    assert most_running == limit, "never more than the limit, and the limit was reached"
    wait_for(
        "every ExportJob to succeed",
        lambda: (
            sum((e.get("status") or {}).get("phase") == "Succeeded" for e in exports.list())
            == count
        ),
        timeout=60,
    )
    # Admission went in queue order (creation time, then name): a Job never appeared before one
    # ahead of it in the queue by more than the width of one admission batch.
    expected = sorted(names, key=lambda n: (created[n], n))
    assert len(admitted_order) == count
    for i, name in enumerate(admitted_order):
        assert abs(expected.index(name) - i) < limit, (name, i, admitted_order, expected)
