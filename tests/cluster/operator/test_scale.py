"""Bursts: one Job per ExportJob across a SIGKILL, and the concurrency limit with FIFO admission
across a restart (the queue lives in the cluster, not in the operator's memory)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3
from kubernetes import watch

from tests.cluster.operator.conftest import Exports, OperatorProcess, wait_for


def _create_many(exports: Exports, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: exports.create(n), names))


def _finished(job: Any) -> bool:
    return any(
        c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or []
    )


class Kubelet(threading.Thread):
    """Plays the kubelet from one pod watch: each bound, unstarted processor pod is reported
    Running, then Succeeded with a result message."""

    def __init__(self, exports: Exports) -> None:
        super().__init__(daemon=True)
        self.exports = exports
        self.done: set[str] = set()
        self.error: BaseException | None = None
        self._stream = watch.Watch()
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    self._follow()
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError):
                    continue
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _follow(self) -> None:
        for event in self._stream.stream(
            self.exports.core.list_namespaced_pod,
            self.exports.namespace,
            label_selector="exportjobs.dev/export",
            timeout_seconds=5,
        ):
            pod = event["object"]
            name = pod.metadata.labels["exportjobs.dev/export"]
            if (
                event["type"] == "DELETED"
                or name in self.done
                or not pod.spec.node_name
                or pod.status.phase != "Pending"
                or pod.metadata.deletion_timestamp is not None
            ):
                continue
            self.exports.run_pod(pod)
            result = {
                "uri": f"s3://out/reports/{name}.csv",
                "bytes": 1,
                "rows": 1,
                "sha256": "ef" * 32,
                "format": "csv",
            }
            self.exports.finish_pod(pod, exit_code=0, message=json.dumps(result))
            self.done.add(name)

    def stop(self) -> None:
        self._stopped.set()
        self._stream.stop()
        self.join(timeout=10)


class JobWatcher(threading.Thread):
    """Follows every Job change; records the most unfinished Jobs at once and admission order."""

    def __init__(self, exports: Exports) -> None:
        super().__init__(daemon=True)
        self.exports = exports
        self.unfinished: set[str] = set()
        self.most_running = 0
        self.admitted_order: list[str] = []
        self._version = ""
        self.error: BaseException | None = None
        self._stream = watch.Watch()
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    self._follow()
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError):
                    continue  # the server ended the stream: watch again
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _follow(self) -> None:
        # Resume from the last version seen: a re-list would report Jobs in name order.
        extra = {"resource_version": self._version} if self._version else {}
        for event in self._stream.stream(
            self.exports.batch.list_namespaced_job,
            self.exports.namespace,
            label_selector="exportjobs.dev/export",
            timeout_seconds=5,
            **extra,
        ):
            self._version = event["object"].metadata.resource_version
            job = event["object"]
            name = job.metadata.labels["exportjobs.dev/export"]
            if name not in self.admitted_order:
                self.admitted_order.append(name)
            if event["type"] == "DELETED" or _finished(job):
                self.unfinished.discard(name)
            else:
                self.unfinished.add(name)
            self.most_running = max(self.most_running, len(self.unfinished))

    def stop(self) -> None:
        self._stopped.set()
        self._stream.stop()
        self.join(timeout=10)


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
        creating = background.submit(_create_many, exports, first)
        wait_for("some Jobs", lambda: len(exports.jobs()) >= 15, timeout=60, interval=0.05)
        operator.kill()  # SIGKILL: no clean-up, creations possibly in flight
        creating.result()
    _create_many(exports, rest)
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
    _create_many(exports, names)

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
