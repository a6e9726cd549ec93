"""Operator benchmark: N ExportJobs created at once → time until every one has its Job.

    source .local/cluster.env && .venv/bin/python bench/bench_operator.py [--count 1000]

Rounds alternate, on the same API server:
- baseline: the same N Jobs (the operator's own manifests, minus the ownerReference to an
  ExportJob that does not exist) created directly by a kubernetes_asyncio client at the
  operator's create concurrency;
- operator: `exportjobs-operator` (a subprocess, as deployed, no concurrency limit) watching a
  fresh namespace; the bench creates N ExportJobs at the same concurrency and watches for Jobs.

Figures: total time from the first create until the last Job is seen by a watch, and the
create→Job latency (ExportJob create answered → its Job seen; for the baseline, Job create sent →
Job seen), p50/p99. Ratio = operator total / baseline total. Goal: ≤ 1.5x and p99 ≤ 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, watch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

from tests.support import pod_status  # noqa: E402

from export_operator import kube, resource  # noqa: E402
from export_operator.controller.jobs import build_job, resolve_inputs  # noqa: E402
from export_operator.controller.settings import OperatorSettings  # noqa: E402
from export_operator.controller.snapshots import ExportView  # noqa: E402

CRD = REPO / "charts" / "exportjobs" / "crds" / "exportjobs.dev_exportjobs.yaml"
OPERATOR = Path(sys.executable).parent / "exportjobs-operator"
PROFILE = os.environ.get("EXPORTJOBS_BENCH_PROFILE", "")
"""When set, the operator runs under cProfile and writes its profile to this path (per round:
the namespace is appended)."""


def _operator_command(namespace: str) -> list[str]:
    if not PROFILE:
        return [str(OPERATOR)]
    out = f"{PROFILE}.{namespace}"
    return [sys.executable, "-m", "cProfile", "-o", out, "-m", "export_operator.operator_main"]


SETTINGS = OperatorSettings.from_env(
    {}, default_destination_uri="s3://bench-out/reports/", service_account="default", max_running=0
)


def export_body(namespace: str, name: str) -> dict[str, Any]:
    """The ExportJob `name` every round creates: a csv export of `s3://bench-in/<name>.csv`."""
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"uri": f"s3://bench-in/{name}.csv"}, "format": "csv"},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Round:
    def __init__(self, api: client.ApiClient, *, kind: str, count: int, concurrency: int) -> None:
        self.api = api
        self.kind = kind
        self.count = count
        self.concurrency = concurrency
        self.namespace = f"bench-{kind[:4]}-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.all_seen = asyncio.Event()

    async def watch_jobs(self, ready: asyncio.Event) -> None:
        stream = watch.Watch()
        version = (
            await self.batch.list_namespaced_job(self.namespace, limit=1)
        ).metadata.resource_version
        ready.set()
        while len(self.seen) < self.count:
            async with stream.stream(
                self.batch.list_namespaced_job,
                self.namespace,
                resource_version=version,
                timeout_seconds=60,
            ) as events:
                async for event in events:
                    job = event["object"]
                    version = job.metadata.resource_version
                    name = (job.metadata.labels or {}).get(resource.LABEL_EXPORT)
                    if name and name.startswith("x-") and name not in self.seen:
                        self.seen[name] = time.monotonic()
                        if len(self.seen) == self.count:
                            self.all_seen.set()
                            stream.stop()
        self.all_seen.set()

    def names(self) -> list[str]:
        return [f"x-{i:05d}" for i in range(self.count)]

    async def create_all(self, make: Any) -> None:
        slots = asyncio.Semaphore(self.concurrency)

        async def one(name: str) -> None:
            async with slots:
                await make(name)

        await asyncio.gather(*(one(n) for n in self.names()))

    async def run(self, operator_env: dict[str, str] | None) -> dict[str, float]:
        await self.core.create_namespace({"metadata": {"name": self.namespace}})
        proc = None
        try:
            if operator_env is not None:
                proc = await self._start_operator(operator_env)
            ready = asyncio.Event()
            watcher = asyncio.create_task(self.watch_jobs(ready))
            await ready.wait()
            start = time.monotonic()
            cpu_start = _cpu_seconds(proc.pid) if proc is not None else 0.0
            if operator_env is None:
                await self.create_all(self._create_job)
            else:
                await self.create_all(self._create_export)
            created = time.monotonic()
            await asyncio.wait_for(self.all_seen.wait(), timeout=600)
            end = max(self.seen.values())
            watcher.cancel()
            cpu = _cpu_seconds(proc.pid) - cpu_start if proc is not None else 0.0
            latencies = [self.seen[n] - self.sent[n] for n in self.names()]
            return {
                "total": end - start,
                "creates": created - start,
                "p50": _percentile(latencies, 0.5),
                "p99": _percentile(latencies, 0.99),
                "max": max(latencies),
                "cpu": cpu,
            }
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            await self.core.delete_namespace(self.namespace)

    async def _start_operator(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        env = {**env, "EXPORTJOBS_NAMESPACE": self.namespace}
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.namespace}-operator.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock runs
                _operator_command(self.namespace), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        # Warm up: one ExportJob through the operator before the clock starts.
        await self._create_export("warmup", record=False)
        deadline = time.monotonic() + 60
        while True:
            jobs = await self.batch.list_namespaced_job(self.namespace)
            if jobs.items:
                return proc
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the operator did not start; see {log}")
            await asyncio.sleep(0.2)

    def _export(self, name: str) -> dict[str, Any]:
        return export_body(self.namespace, name)

    async def _create_export(self, name: str, *, record: bool = True) -> None:
        response = await self.custom.create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            self.namespace,
            resource.PLURAL,
            self._export(name),
            _preload_content=False,
        )
        await response.read()
        response.release()
        if record:
            self.sent[name] = time.monotonic()

    async def _create_job(self, name: str) -> None:
        body = self._export(name)
        body["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": None})
        view = ExportView.from_body(body)
        job = build_job(
            export=view, inputs=resolve_inputs(export=view, settings=SETTINGS), settings=SETTINGS
        )
        del job["metadata"]["ownerReferences"]  # no such ExportJob: the GC would remove it
        self.sent[name] = time.monotonic()
        response = await self.batch.create_namespaced_job(
            self.namespace, job, _preload_content=False
        )
        await response.read()
        response.release()
        if response.status != 201:
            raise RuntimeError(f"Job create answered {response.status}")


def _rss_bytes(pid: int) -> int:
    """Resident set size of a process now (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _apply_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD.read_text())
    try:
        await ext.create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        current = await ext.read_custom_resource_definition(body["metadata"]["name"])
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await ext.replace_custom_resource_definition(body["metadata"]["name"], body)
    await asyncio.sleep(2)


async def _wait_namespaces_gone(api: client.ApiClient, names: list[str]) -> None:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        live = {n.metadata.name for n in (await core.list_namespace()).items}
        if not live & set(names):
            return
        await asyncio.sleep(1)


class Backlog:
    """N ExportJobs through `maxRunning` slots, the bench acting as the kubelet."""

    def __init__(self, api: client.ApiClient, *, count: int, max_running: int) -> None:
        self.api = api
        self.count = count
        self.max_running = max_running
        self.namespace = f"bench-back-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.job_order: list[str] = []
        self.modified: dict[str, int] = {}
        self.phases: dict[str, str] = {}
        self.created: dict[str, str] = {}
        self.succeeded = asyncio.Event()
        self.peak_rss = 0
        self.pods_done: set[str] = set()
        self.sent: dict[str, float] = {}
        """When each ExportJob's create was answered."""
        self.first_job: dict[str, float] = {}
        """When the first Job of each ExportJob was seen."""

    async def _follow(self, lister: Any, on_event: Any) -> None:
        stream = watch.Watch()
        version = ""
        while True:
            if not version:
                listed = await lister(self.namespace, limit=1)
                version = (
                    listed["metadata"]["resourceVersion"]
                    if isinstance(listed, dict)
                    else listed.metadata.resource_version
                )
            async with stream.stream(
                lister, self.namespace, resource_version=version, timeout_seconds=60
            ) as events:
                async for event in events:
                    if event["type"] == "ERROR":  # e.g. 410 Gone: start again from now
                        version = ""
                        break
                    obj = event["object"]
                    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                    version = (
                        meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                    )
                    await on_event(event["type"], obj)

    async def _on_export(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if not name.startswith("x-"):
            return  # a warm-up
        if kind == "ADDED":
            self.created[name] = obj["metadata"]["creationTimestamp"]
        if kind == "MODIFIED":
            self.modified[name] = self.modified.get(name, 0) + 1
        phase = (obj.get("status") or {}).get("phase", "")
        self.phases[name] = phase
        if len(self.phases) == self.count and all(p == "Succeeded" for p in self.phases.values()):
            self.succeeded.set()

    async def _on_job(self, kind: str, job: Any) -> None:
        name = (job.metadata.labels or {}).get(resource.LABEL_EXPORT)
        if kind == "ADDED" and name and name not in self.first_job:
            self.first_job[name] = time.monotonic()
            if name.startswith("x-"):
                self.job_order.append(name)

    async def _on_pod(self, kind: str, pod: Any) -> None:
        name = (pod.metadata.labels or {}).get(resource.LABEL_EXPORT)
        if (
            kind == "DELETED"
            or not name
            or pod.metadata.name in self.pods_done
            or not pod.spec.node_name
            or pod.status.phase != "Pending"
        ):
            return
        self.pods_done.add(pod.metadata.name)
        self._spawn(self._finish_pod(pod.metadata.name, self.message(pod)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def warm_up(self) -> None:
        """Before the clock starts: give the operator a moment to list and watch."""
        await asyncio.sleep(3)

    def message(self, pod: Any) -> str:
        """What the processor of `pod` would write as its termination message: a result."""
        name = pod.metadata.labels[resource.LABEL_EXPORT]
        return (
            '{"uri": "s3://bench-out/reports/' + name + '.csv", "bytes": 1, "rows": 1, '
            '"sha256": "' + "ab" * 32 + '", "format": "csv"}'
        )

    def body(self, name: str) -> dict[str, Any]:
        """The ExportJob `name`."""
        return export_body(self.namespace, name)

    async def _finish_pod(self, pod_name: str, result: str) -> None:
        status = pod_status.terminated(exit_code=0, message=result)
        async with self._slots:
            response = await self.core.patch_namespaced_pod_status(
                pod_name, self.namespace, status, _preload_content=False
            )
            await response.read()
            response.release()

    async def _sample_rss(self, pid: int) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, _rss_bytes(pid))
            await asyncio.sleep(0.5)

    async def run(self, env: dict[str, str], *, concurrency: int) -> dict[str, float]:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(16)
        await self.core.create_namespace({"metadata": {"name": self.namespace}})
        env = {
            **env,
            "EXPORTJOBS_NAMESPACE": self.namespace,
            "EXPORTJOBS_OPERATOR_MAX_RUNNING": str(self.max_running),
        }
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.namespace}-operator.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock runs
                _operator_command(self.namespace), env=env, stdout=out, stderr=subprocess.STDOUT
            )
        followers = [
            asyncio.create_task(self._follow(self.custom_lister, self._on_export)),
            asyncio.create_task(self._follow(self.batch.list_namespaced_job, self._on_job)),
            asyncio.create_task(self._follow(self.core.list_namespaced_pod, self._on_pod)),
            asyncio.create_task(self._sample_rss(proc.pid)),
        ]
        try:
            await self.warm_up()
            start = time.monotonic()
            slots = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                name = f"x-{i:05d}"
                async with slots:
                    response = await self.custom.create_namespaced_custom_object(
                        resource.GROUP,
                        resource.VERSION,
                        self.namespace,
                        resource.PLURAL,
                        self.body(name),
                        _preload_content=False,
                    )
                    await response.read()
                    response.release()
                    self.sent[name] = time.monotonic()

            await asyncio.gather(*(one(i) for i in range(self.count)))
            created = time.monotonic() - start
            print(f"backlog: {self.count} ExportJobs created in {created:.1f}s", flush=True)
            last = -1
            while not self.succeeded.is_set():
                # Up to 10 s between reports; the total is taken when the last one succeeded.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.succeeded.wait(), 10)
                done = sum(p == "Succeeded" for p in self.phases.values())
                finished = [n for n, p in self.phases.items() if p == "Succeeded"]
                mean = statistics.mean(self.modified.get(n, 0) for n in finished) if finished else 0
                most = max((self.modified.get(n, 0) for n in finished), default=0)
                print(
                    f"  {time.monotonic() - start:6.0f}s: {len(self.job_order)} Jobs, "
                    f"{done} Succeeded (status patches each: mean {mean:.2f}, max {most}), "
                    f"FIFO displacement so far {self._displacement()}, "
                    f"operator RSS peak {self.peak_rss / 2**20:.0f} MiB, "
                    f"CPU {_cpu_seconds(proc.pid):.0f}s",
                    flush=True,
                )
                if proc.poll() is not None:
                    raise RuntimeError(f"the operator exited; see {log}")
                if done == last and done < self.count and time.monotonic() - start > 3600:
                    raise RuntimeError("no progress")
                last = done
            total = time.monotonic() - start
            cpu = _cpu_seconds(proc.pid)
            await asyncio.sleep(3)  # late patches (none expected) would be counted now
        finally:
            for task in followers:
                task.cancel()
            proc.terminate()
            proc.wait(timeout=30)
            await self.core.delete_namespace(self.namespace)
        expected = sorted(self.created, key=lambda n: (self.created[n], n))
        displacement = self._displacement()
        patches = [self.modified.get(n, 0) for n in expected]
        latencies = [self.first_job[n] - self.sent[n] for n in self.sent if n in self.first_job]
        return {
            "p50": _percentile(latencies, 0.5) if latencies else 0.0,
            "p99": _percentile(latencies, 0.99) if latencies else 0.0,
            "total": total,
            "jobs": len(self.job_order),
            "distinct_jobs": len(set(self.job_order)),
            "succeeded": sum(p == "Succeeded" for p in self.phases.values()),
            "displacement": displacement,
            "rss_mib": self.peak_rss / 2**20,
            "patches_mean": statistics.mean(patches),
            "patches_max": max(patches),
            "cpu": cpu,
        }

    def _displacement(self) -> int:
        """How many places the Jobs so far are off the ExportJobs' creation order, at most."""
        expected = sorted(self.created, key=lambda n: (self.created[n], n))
        place = {n: i for i, n in enumerate(expected)}
        return max(
            (abs(place[n] - i) for i, n in enumerate(self.job_order) if n in place), default=0
        )

    async def custom_lister(self, namespace: str, **kwargs: Any) -> Any:
        kwargs.setdefault("_preload_content", True)
        return await self.custom.list_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, **kwargs
        )


async def main_backlog(
    args: argparse.Namespace, api: client.ApiClient, env: dict[str, str]
) -> None:
    backlog = Backlog(api, count=args.backlog, max_running=args.max_running)
    figures = await backlog.run(env, concurrency=args.concurrency)
    print(
        f"backlog {args.backlog} with maxRunning {args.max_running}: "
        f"{figures['total']:.0f}s; Jobs {figures['jobs']} ({figures['distinct_jobs']} distinct), "
        f"Succeeded {figures['succeeded']}; FIFO: at most {figures['displacement']} places off "
        f"(goal < {args.max_running}); operator peak RSS {figures['rss_mib']:.0f} MiB "
        f"(goal <= 300); status patches per export mean {figures['patches_mean']:.2f}, "
        f"max {figures['patches_max']} (goal <= 3); operator CPU {figures['cpu']:.0f}s in all"
    )


def operator_env(workers: int) -> dict[str, str]:
    """The operator's environment in a bench round: standalone, no limit, `workers` workers."""
    return {
        **os.environ,
        "EXPORTJOBS_OPERATOR_STANDALONE": "true",
        "EXPORTJOBS_OPERATOR_MAX_RUNNING": "0",
        "EXPORTJOBS_OPERATOR_SERVICE_ACCOUNT": "default",
        "EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI": "s3://bench-out/reports/",
        "EXPORTJOBS_OPERATOR_METRICS_PORT": "0",
        "EXPORTJOBS_OPERATOR_LIVENESS_PORT": "0",
        "EXPORTJOBS_OPERATOR_WORKERS": str(workers),
    }


async def main_async(args: argparse.Namespace) -> int:
    api = await kube.new_api_client(trust_env=False)
    try:
        await _apply_crd(api)
        env = operator_env(args.concurrency)
        if args.backlog:
            await main_backlog(args, api, env)
            return 0
        results: dict[str, list[dict[str, float]]] = {"baseline": [], "operator": []}
        for i in range(args.rounds):
            for kind in ("baseline", "operator"):
                bench = Round(api, kind=kind, count=args.count, concurrency=args.concurrency)
                figures = await bench.run(env if kind == "operator" else None)
                results[kind].append(figures)
                print(
                    f"round {i + 1} {kind:8s}: total {figures['total']:6.2f}s "
                    f"(creates {figures['creates']:5.2f}s)  create→Job p50 "
                    f"{figures['p50'] * 1000:6.0f} ms  p99 {figures['p99'] * 1000:6.0f} ms  "
                    f"max {figures['max'] * 1000:6.0f} ms"
                    + (f"  operator CPU {figures['cpu']:.1f}s" if figures["cpu"] else ""),
                    flush=True,
                )
                await _wait_namespaces_gone(api, [bench.namespace])
        ratios = [
            o["total"] / b["total"]
            for o, b in zip(results["operator"], results["baseline"], strict=True)
        ]
        p99 = statistics.median(o["p99"] for o in results["operator"])
        print(
            f"ratio operator/baseline total: {', '.join(f'{r:.2f}x' for r in ratios)}; "
            f"median {statistics.median(ratios):.2f}x (goal <= 1.5x)"
        )
        print(f"operator create→Job p99 (median of rounds): {p99 * 1000:.0f} ms (goal <= 2000 ms)")
    finally:
        await api.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="200 objects, one round")
    parser.add_argument("--backlog", type=int, default=0, help="N ExportJobs through the limit")
    parser.add_argument("--max-running", type=int, default=50, help="the limit for --backlog")
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds = 200, 1
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
