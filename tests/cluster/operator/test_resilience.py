"""No false failures under trouble: a ResourceQuota that refuses Jobs, bad input, a pod that can
never start, the leader SIGKILLed mid-burst (a standby takes over), and the API server stopped for
20 s mid-burst."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.support.apiserver import ApiServer
from tests.support.cluster import LocalCluster
from tests.support.operator_process import (
    Exports,
    Kubelet,
    OperatorProcess,
    create_many,
)
from tests.support.wait import wait_for

LEASE = "exportjobs-operator"


def _phases(exports: Exports) -> dict[str, str]:
    return {e["metadata"]["name"]: (e.get("status") or {}).get("phase", "") for e in exports.list()}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_quota_of_two_jobs_ten_exports_all_finish_and_the_waiting_say_why(
    exports: Exports, operator: OperatorProcess, namespace: str
) -> None:
    exports.core.create_namespaced_resource_quota(
        namespace,
        {"metadata": {"name": "jobs"}, "spec": {"hard": {"count/jobs.batch": "2"}}},
    )
    wait_for(
        "the quota to be counted",
        lambda: exports.core.read_namespaced_resource_quota("jobs", namespace).status.hard,
    )
    operator.start(ttl_seconds_after_finished=0, retry_max_seconds=2)
    names = [f"q-{i}" for i in range(10)]
    create_many(exports, names)

    def says_quota() -> dict[str, Any] | None:
        for export in exports.list():
            status = export.get("status") or {}
            if _condition(status, "Queued").get("reason") == "QuotaExceeded":
                return status
        return None

    waiting = wait_for("an export waiting on the quota, saying so", says_quota, timeout=60)
    assert "jobName" not in waiting, "no Job is shown before it exists"
    assert "exceeded quota" in _condition(waiting, "Queued")["message"]
    wait_for(
        "a Warning Event QuotaExceeded",
        lambda: any(
            e.reason == "QuotaExceeded" and e.type == "Warning"
            for e in exports.core.list_namespaced_event(namespace).items
        ),
        timeout=30,
    )

    kubelet = Kubelet(exports)
    kubelet.start()
    try:
        # Failed is final: if every export ends Succeeded, none was ever (falsely) Failed.
        wait_for(
            "every export to succeed",
            lambda: set(_phases(exports).values()) == {"Succeeded"},
            timeout=240,
            interval=1,
        )
    finally:
        kubelet.stop()
    assert kubelet.error is None, kubelet.error
    assert len(kubelet.done) == len(names), "one pod run per export"


def test_bad_input_stays_with_its_export_and_a_pod_that_cannot_start_frees_its_slot(
    exports: Exports, operator: OperatorProcess
) -> None:
    operator.start(max_running=1, start_timeout_seconds=3)
    exports.create("stuck")
    exports.stall_pod(
        exports.wait_pod("stuck"),
        reason="CreateContainerError",
        message="invalid environment variable",
    )
    # A spec the API server accepts and this operator cannot run (no dataset template here).
    exports.create("dataset", source=None, datasetId="5f0c6a59-3f5e-4a55-9d59-8e7f2a4c2b11")
    goods = [f"good-{i}" for i in range(3)]
    create_many(exports, goods)
    status = exports.wait_phase("dataset", "Failed", timeout=30)  # at once, not after its wait
    assert status["error"]["code"] == "INVALID_SPEC"
    assert "template" in status["error"]["message"]
    assert exports.job("dataset") is None
    kubelet = Kubelet(exports, skip=frozenset({"stuck"}))
    kubelet.start()
    try:
        status = exports.wait_phase("stuck", "Failed", timeout=60)
        assert status["error"]["code"] == "POD_START_FAILED"
        assert "CreateContainerError" in status["error"]["message"]
        wait_for("the stuck Job to go", lambda: exports.job("stuck") is None, timeout=30)
        for name in goods:  # the only slot was freed: the others run, one by one
            exports.wait_phase(name, "Succeeded", timeout=60)
    finally:
        kubelet.stop()
    assert kubelet.error is None, kubelet.error


def _holder(exports: Exports) -> str:
    try:
        lease = k8s.CoordinationV1Api(exports.batch.api_client).read_namespaced_lease(
            LEASE, exports.namespace
        )
    except k8s.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def _identity(process: OperatorProcess) -> str:
    assert process.proc is not None
    return f"{socket.gethostname()}_{process.proc.pid}"


def _job_uids(exports: Exports) -> dict[str, str]:
    return {j.metadata.name: j.metadata.uid for j in exports.jobs()}


def _check_exactly_one_job_each(exports: Exports, names: list[str], before: dict[str, str]) -> None:
    wait_for(
        "a Job for every ExportJob",
        lambda: len(exports.jobs()) >= len(names),
        timeout=180,
        interval=1,
    )
    time.sleep(3)  # anything doubled or recreated would show now
    after = _job_uids(exports)
    assert sorted(after) == sorted(f"export-{n}" for n in names)
    for name, uid in before.items():
        assert after[name] == uid, f"{name} was deleted and created again"
    wait_for(
        "every status to name its Job",
        lambda: all(
            (e.get("status") or {}).get("jobName") == f"export-{e['metadata']['name']}"
            for e in exports.list()
        ),
        timeout=60,
        interval=1,
    )
    phases = _phases(exports)
    assert len(phases) == len(names)
    assert "Failed" not in phases.values(), {n: p for n, p in phases.items() if p == "Failed"}


def _in_background(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_sigkill_the_leader_mid_burst_and_the_standby_takes_over_within_15_s(
    exports: Exports,
    operator: OperatorProcess,
    second_operator: OperatorProcess,
    namespace: str,
) -> None:
    elect = {"standalone": "false", "lease_namespace": namespace, "max_running": 0}
    operator.start(**elect)
    wait_for("the first to lead", lambda: _holder(exports) == _identity(operator), timeout=60)
    second_operator.start(**elect)
    time.sleep(3)  # the standby's caches fill; it must not act
    assert _holder(exports) == _identity(operator)
    names = [f"f-{i:03d}" for i in range(300)]
    first, rest = names[:120], names[120:]
    creating = _in_background(lambda: create_many(exports, first))
    wait_for("some Jobs", lambda: len(exports.jobs()) >= 40, timeout=60, interval=0.05)
    operator.kill()  # SIGKILL, creations in flight
    killed = time.monotonic()
    creating.join()
    before = _job_uids(exports)
    assert len(before) < len(names)
    took_over: list[float] = []

    def watch_takeover() -> None:  # from the kill on, while the burst goes on
        while time.monotonic() - killed < 60:
            if _holder(exports) == _identity(second_operator) and len(exports.jobs()) > len(before):
                took_over.append(time.monotonic() - killed)
                return
            time.sleep(0.1)

    watcher = _in_background(watch_takeover)
    create_many(exports, rest)  # the burst goes on while nobody leads
    watcher.join()
    assert took_over, "the standby did not take over within 60 s"
    assert took_over[0] <= 15, f"the standby took {took_over[0]:.1f}s"
    _check_exactly_one_job_each(exports, names, before)
    print(f"standby took over and created Jobs {took_over[0]:.1f}s after the SIGKILL")


def test_api_server_stopped_20_s_mid_burst_nothing_lost_doubled_or_failed(
    exports: Exports,
    operator: OperatorProcess,
    namespace: str,
    cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    apiserver = ApiServer(cluster, tmp_path)
    operator.start(
        standalone="false", lease_namespace=namespace, retry_max_seconds=5, max_running=0
    )
    wait_for("the operator to lead", lambda: _holder(exports) == _identity(operator), timeout=60)
    names = [f"a-{i:03d}" for i in range(300)]
    first, rest = names[:150], names[150:]
    create_many(exports, first)
    wait_for("some Jobs", lambda: len(exports.jobs()) >= 30, timeout=60, interval=0.05)
    try:
        apiserver.stop()
        stopped = time.monotonic()
        time.sleep(20)
    finally:
        apiserver.start()
    wait_for(
        "the API server to answer again",
        lambda: _try(lambda: exports.core.list_namespace(limit=1)),
        timeout=60,
        interval=0.5,
    )
    print(f"API server down {time.monotonic() - stopped:.1f}s")
    # kube-controller-manager and kube-scheduler end when they lose their own leases: started
    # again here (the job controller creates pods; nothing of the operator's).
    print("control plane components started again:", apiserver.revive_components())
    before = _job_uids(exports)
    create_many(exports, rest)
    _check_exactly_one_job_each(exports, names, before)
    assert operator.proc is not None and operator.proc.poll() is None, "never restarted"
    assert operator.runs == 1


def _try(probe: Callable[[], Any]) -> bool:
    try:
        probe()
    except Exception:
        return False
    return True
