"""Soak: the product on the real node for a given time under mixed load, reported per window.

    .venv/bin/python bench/soak.py [--minutes 60] [--window-minutes 5] [--failover-minutes 10]

Starts (or reuses, with EXPORTJOBS_SOAK_REUSE=1 and .local/soak) the local cluster with its real
node, builds and loads both images, installs the chart (two operator replicas electing a leader,
short retention so that etcd's object counts must stay bounded) and a completion-callback receiver
(hack/callback_receiver.py) that answers 20 % of deliveries 500. Then, for the given time:

- API callers: `POST /v1/exports` (small sources, and a 100 MB one at intervals, with a callback
  URL), `GET /v1/exports/{id}` of the exports in flight, `DELETE` of one in twenty;
- every 10 s a list of every ExportJob (kubectl), which is what tells the soak an export ended;
- S3 events for fresh objects, each delivered twice (the duplicate must answer the same id);
- the operator's leader pod deleted every `--failover-minutes`.

Per window: requests, their p50/p99, exports finished (seen final, at most 10 s late), the RSS
of the webhook and operator pods and the API server's object counts (exportjobs, jobs, pods,
events). At the end every accepted export must reach a final phase (none lost), no export may
run twice (two pods of one export Succeeded, two ids for one event, a callback answered 2xx
twice) and no valid request may get a 5xx; after the warm-up no component's RSS may grow more
than 20 MiB/hour (least squares over the largest RSS of the component's pods at each sample,
for the operator per leader's term after its warm-up: `Soak.component_slopes`; enforced for
runs of at least 30 minutes, reported always, per pod too, with every sample in the JSON).
Exit status 1 when any of it fails.

`run()` is also called by tests/e2e/test_soak.py (3 minutes, on the e2e tier's installed product).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.strategies import s3_event  # noqa: E402

FINAL = {"Succeeded", "Failed", "Cancelled"}
FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]
MiB = 1024 * 1024
RSS_LIMIT_MIB_PER_HOUR = 20.0
SWEEP_SECONDS = 10.0
"""Seconds between two lists of every ExportJob (`Soak.sweeps`), far inside the retention."""
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
NODE_ADDRESS = "10.244.0.1"
"""The real node's bridge address: the host (receiver, S3) as the pods reach it."""


@dataclass
class Target:
    """The installed product as the soak drives it."""

    url: Callable[[], str]
    """The webhook's base URL (a port-forward, restarted when it ends)."""
    token: str
    namespace: str
    kubectl: Callable[..., str]
    s3: Any
    input_bucket: str
    callback_url: str | None
    callback_events: Path | None
    """The receiver's events.jsonl (hack/callback_receiver.py)."""


@dataclass
class Export:
    id: str
    kind: str
    accepted: float
    final: str | None = None
    finished: float | None = None
    deleted: bool = False


@dataclass
class Window:
    start: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[str] = field(default_factory=Counter)
    finished: int = 0
    rss: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    objects: dict[str, int] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def small_csv(rows: int) -> bytes:
    lines = ["id,name,amount,note"]
    lines += [f'{i},n{i},{i * 0.5:.2f},"note, {i}"' for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def big_csv(size: int) -> bytes:
    row = b'%d,customer %d,%d.25,"a note, with a comma and ""quotes""",2024-05-%02d\n'
    out = [b"id,name,amount,note,day\n"]
    total, i = 0, 0
    while total < size:
        line = row % (i, i, i, 1 + i % 28)
        out.append(line)
        total += len(line)
        i += 1
    return b"".join(out)


def pod_rss(uid: str) -> int:
    """Resident bytes of a pod's processes on this machine (the real node), found by the pod's
    UID in their cgroup path."""
    marks = (uid, uid.replace("-", "_"))
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
            if not any(mark in cgroup for mark in marks):
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if match and "pause" not in status.split("\n", 1)[0]:
            total += int(match.group(1)) * 1024
    return total


COUNTED = {
    "exportjobs.exportjobs.dev",
    "jobs.batch",
    "pods",
    "events",
    "leases.coordination.k8s.io",
}


def object_counts(metrics: str) -> dict[str, int]:
    """Objects stored per resource, from the API server's metrics (`apiserver_storage_objects`,
    or its successor `apiserver_resource_objects` with separate group and resource labels)."""
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        match = re.match(r"apiserver_(storage|resource)_objects\{(.*)\} (\S+)$", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        name = labels.get("resource", "")
        if match.group(1) == "resource" and labels.get("group"):
            name = f"{name}.{labels['group']}"
        if name in COUNTED:
            counts[name] = int(float(match.group(3)))
    return counts


def slope_mib_per_hour(*runs: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, bytes) samples, in MiB/hour; given several runs of
    samples, the slope they share, each run at its own level (one intercept per run)."""
    if sum(len(run) for run in runs) < 3:
        return None
    var = cov = 0.0
    for run in runs:
        if not run:
            continue
        mean_t = sum(t for t, _ in run) / len(run)
        mean_v = sum(v for _, v in run) / len(run)
        var += sum((t - mean_t) ** 2 for t, _ in run)
        cov += sum((t - mean_t) * (v - mean_v) for t, v in run)
    if var == 0:
        return None
    return cov / var * 3600 / MiB


class Soak:
    def __init__(
        self,
        target: Target,
        *,
        seconds: float,
        window_seconds: float,
        failover_seconds: float,
        big_bytes: int,
        big_every_seconds: float,
        post_every_seconds: float = 1.5,
        warmup_seconds: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.t = target
        self.seconds = seconds
        self.window_seconds = window_seconds
        self.failover_seconds = failover_seconds
        self.big_bytes = big_bytes
        self.big_every = big_every_seconds
        self.post_every = post_every_seconds
        self.warmup = warmup_seconds if warmup_seconds is not None else min(600, seconds / 6)
        self.term_warmup = min(self.warmup, failover_seconds / 2)
        """Seconds a new operator leader is given to fill its caches before its RSS counts."""
        self.log = log
        self.exports: dict[str, Export] = {}
        self.windows: list[Window] = []
        self.server_errors: list[str] = []
        self.transport_errors: Counter[str] = Counter()
        self.doubled_events: list[str] = []
        self.rss_samples: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        self.failovers = 0
        self.failover_times: list[float] = []
        """Seconds into the run at which an operator leader was deleted."""
        self.started = 0.0
        self._rng = random.Random(22)
        self._stop = asyncio.Event()
        self._pods_succeeded: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        """(export, its run: the step and completion index of a split export's pods, "" for a
        whole export's) -> pod uid -> what the pod was (name, Job, start and end): two pods for
        one run is the export run twice."""
        self._pods_lock = threading.Lock()

    # -- requests ----------------------------------------------------------------------------

    def _window(self) -> Window:
        now = time.monotonic()
        while not self.windows or now >= self.windows[-1].start + self.window_seconds:
            start = self.windows[-1].start + self.window_seconds if self.windows else now
            self.windows.append(Window(start))
        return self.windows[-1]

    async def call(
        self, session: aiohttp.ClientSession, kind: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.t.token}"}
        began = time.monotonic()
        try:
            async with session.request(
                method, self.t.url() + path, json=body, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The port-forward follows one webhook pod; its restarts are not the product's.
            self.transport_errors[type(exc).__name__] += 1
            return 0, None
        window = self._window()
        window.latencies[kind].append(time.monotonic() - began)
        window.statuses[f"{kind} {status}"] += 1
        if status >= 500:
            self.server_errors.append(f"{method} {path}: {status} {raw[:200]!r}")
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    async def post_export(self, session: aiohttp.ClientSession, kind: str, key: str) -> None:
        body: dict[str, Any] = {
            "source": f"s3://{self.t.input_bucket}/{key}",
            "format": self._rng.choice(FORMATS),
        }
        if self.t.callback_url:
            body["callback_url"] = self.t.callback_url
        status, answer = await self.call(session, "POST", "POST", "/v1/exports", body)
        if status == 202 and answer:
            self.exports[answer["id"]] = Export(answer["id"], kind, time.monotonic())

    async def posts(self, session: aiohttp.ClientSession) -> None:
        last_big = -1e9
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_big >= self.big_every:
                last_big = now
                await self.post_export(session, "big", "soak/big.csv")
            else:
                await self.post_export(session, "small", "soak/small.csv")
            await self._sleep(self.post_every * self._rng.uniform(0.5, 1.5))

    async def events(self, session: aiohttp.ClientSession) -> None:
        """A fresh object and its event, delivered twice: both answers name the same export."""
        data = small_csv(200)
        while not self._stop.is_set():
            key = f"soak/events/{uuid.uuid4().hex[:12]}.csv"
            put = await asyncio.to_thread(
                self.t.s3.put_object, Bucket=self.t.input_bucket, Key=key, Body=data
            )
            event = s3_event(self.t.input_bucket, key, len(data))
            # The object's own ETag: the export is pinned to it.
            event["Records"][0]["s3"]["object"]["eTag"] = put["ETag"].strip('"')
            fmt = self._rng.choice(FORMATS)
            ids = []
            for _ in range(2):
                status, answer = await self.call(
                    session, "EVENT", "POST", f"/v1/events/s3?format={fmt}", event
                )
                if status == 202 and answer:
                    ids.append(tuple(answer["ids"]))
            if len(set(ids)) > 1:
                self.doubled_events.append(f"{key}: {ids}")
            if ids:
                for export_id in ids[0]:
                    self.exports.setdefault(export_id, Export(export_id, "event", time.monotonic()))
            await self._sleep(self._rng.uniform(3, 7))

    async def reads(self, session: aiohttp.ClientSession) -> None:
        """GET the exports in flight (which also sees them finish), and DELETE one in twenty
        shortly after it was accepted."""
        while not self._stop.is_set() or self._open():
            open_now = self._open()
            for export in self._rng.sample(open_now, min(5, len(open_now))):
                if (
                    export.kind == "small"
                    and not export.deleted
                    and time.monotonic() - export.accepted < 5
                    and self._rng.random() < 0.05
                ):
                    export.deleted = True
                    await self.call(session, "DELETE", "DELETE", f"/v1/exports/{export.id}")
                status, view = await self.call(session, "GET", "GET", f"/v1/exports/{export.id}")
                if status == 200 and view and view.get("status") in FINAL:
                    self._final(export, view["status"])
            await asyncio.sleep(0.5)
            if self._stop.is_set() and time.monotonic() > self._drain_deadline:
                return

    async def sweeps(self) -> None:
        """Every SWEEP_SECONDS, all the ExportJobs in one list: the GETs of `reads` reach five
        open exports at a time, so with hundreds open they saw an export finish minutes late or,
        once retention (900 s) had deleted it, never (the hour's run of 2026-12-07 counted 205
        exports "lost" whose callbacks said Succeeded)."""
        while True:
            try:
                out = await asyncio.to_thread(
                    self.t.kubectl, "-n", self.t.namespace, "get", "exportjobs", "-o", "json"
                )
            except Exception as exc:  # an API server hiccup: the next sweep reads them
                self.transport_errors[f"sweep {type(exc).__name__}"] += 1
            else:
                self.mark_listed(json.loads(out).get("items", []))
            if self._stop.is_set() and (
                not self._open() or time.monotonic() > self._drain_deadline
            ):
                return
            await asyncio.sleep(SWEEP_SECONDS)

    def mark_listed(self, items: list[dict[str, Any]]) -> None:
        """Mark the exports a list shows in a final phase."""
        for item in items:
            export = self.exports.get(item.get("metadata", {}).get("name", ""))
            phase = (item.get("status") or {}).get("phase")
            if export is not None and export.final is None and phase in FINAL:
                self._final(export, phase)

    def _final(self, export: Export, phase: str) -> None:
        export.final = phase
        export.finished = time.monotonic()
        self._window().finished += 1

    def _open(self) -> list[Export]:
        return [e for e in self.exports.values() if e.final is None]

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- the cluster -------------------------------------------------------------------------

    def _pods(self, component: str) -> list[dict[str, Any]]:
        out = self.t.kubectl(
            "-n",
            self.t.namespace,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/component={component}",
            "-o",
            "json",
        )
        return [
            p
            for p in json.loads(out)["items"]
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
        ]

    def _objects(self) -> dict[str, int]:
        return object_counts(self.t.kubectl("get", "--raw", "/metrics"))

    async def sample(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self.started
            window = self._window()
            for component in ("webhook", "operator"):
                pods = await asyncio.to_thread(self._pods, component)
                for pod in pods:
                    rss = await asyncio.to_thread(pod_rss, pod["metadata"]["uid"])
                    if rss:
                        window.rss[component].append(rss)
                        self.rss_samples[(component, pod["metadata"]["name"])].append((now, rss))
            window.objects = await asyncio.to_thread(self._objects)
            self._watch_pods()
            await self._sleep(20)

    def _watch_pods(self) -> None:
        """Processor pods that Succeeded, by export and run (a pod seen twice counts once)."""
        out = self.t.kubectl(
            "-n", self.t.namespace, "get", "pods", "-l", "exportjobs.dev/export", "-o", "json"
        )
        with self._pods_lock:
            for pod in json.loads(out)["items"]:
                if pod["status"].get("phase") == "Succeeded":
                    labels = pod["metadata"]["labels"]
                    export = labels["exportjobs.dev/export"]
                    run = "{}/{}".format(
                        labels.get("exportjobs.dev/step", ""),
                        (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, ""),
                    )
                    owners = pod["metadata"].get("ownerReferences") or [{}]
                    states = [
                        c.get("state", {}).get("terminated", {})
                        for c in pod["status"].get("containerStatuses", [])
                    ]
                    self._pods_succeeded[(export, run)][pod["metadata"]["uid"]] = (
                        f"{pod['metadata']['name']} of Job {owners[0].get('name')} "
                        f"(uid {str(owners[0].get('uid'))[:8]}), created "
                        f"{pod['metadata'].get('creationTimestamp')}, ran "
                        + ", ".join(f"{t.get('startedAt')}..{t.get('finishedAt')}" for t in states)
                    )

    async def failover(self) -> None:
        while not self._stop.is_set():
            await self._sleep(self.failover_seconds)
            if self._stop.is_set():
                return
            lease = json.loads(
                await asyncio.to_thread(
                    self.t.kubectl, "-n", self.t.namespace, "get", "leases", "-o", "json"
                )
            )
            holders = [
                item["spec"].get("holderIdentity", "")
                for item in lease["items"]
                if "exportjobs" in item["metadata"]["name"]
            ]
            pods = await asyncio.to_thread(self._pods, "operator")
            leader = next(
                (p for p in pods if any(p["metadata"]["name"] in h for h in holders if h)),
                pods[0] if pods else None,
            )
            if leader is None:
                continue
            self.log(f"[soak] failover: deleting the operator leader {leader['metadata']['name']}")
            await asyncio.to_thread(
                self.t.kubectl,
                "-n",
                self.t.namespace,
                "delete",
                "pod",
                leader["metadata"]["name"],
                "--wait=false",
            )
            self.failovers += 1
            self.failover_times.append(time.monotonic() - self.started)

    async def progress(self) -> None:
        printed = 0
        while not self._stop.is_set():
            await self._sleep(10)
            self._window()
            while printed < len(self.windows) - 1:
                self.log(self.window_line(printed, self.windows[printed]))
                printed += 1

    # -- the run -----------------------------------------------------------------------------

    def upload_sources(self) -> None:
        self.t.s3.put_object(Bucket=self.t.input_bucket, Key="soak/small.csv", Body=small_csv(2000))
        self.t.s3.put_object(
            Bucket=self.t.input_bucket, Key="soak/big.csv", Body=big_csv(self.big_bytes)
        )

    async def run(self, drain_seconds: float) -> dict[str, Any]:
        self.upload_sources()
        self.started = time.monotonic()
        self._drain_deadline = float("inf")
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [
                asyncio.create_task(self.posts(session)),
                asyncio.create_task(self.events(session)),
                asyncio.create_task(self.sample()),
                asyncio.create_task(self.failover()),
                asyncio.create_task(self.progress()),
            ]
            readers = [
                asyncio.create_task(self.reads(session)),
                asyncio.create_task(self.sweeps()),
            ]
            await asyncio.sleep(self.seconds)
            self._stop.set()
            self._drain_deadline = time.monotonic() + drain_seconds
            await asyncio.gather(*tasks)
            await asyncio.gather(*readers)
        # Callbacks follow the final phase (retried after the receiver's 500s): wait for them.
        for _ in range(int(min(drain_seconds, 180) / 2)):
            if not self._callbacks_missing():
                break
            await asyncio.sleep(2)
        self._watch_pods()
        return self.report()

    def _callbacks_missing(self) -> list[str]:
        if not self.t.callback_url:
            return []
        delivered = self.callbacks()
        return sorted(
            e.id
            for e in self.exports.values()
            if e.final is not None and e.kind != "event" and delivered[e.id] == 0
        )

    def window_line(self, index: int, window: Window) -> str:
        every = [x for values in window.latencies.values() for x in values]
        rss = {c: max(v) / MiB for c, v in window.rss.items() if v}
        return (
            f"[soak] window {index} ({index * self.window_seconds / 60:.0f}-"
            f"{(index + 1) * self.window_seconds / 60:.0f} min): requests {len(every)}, "
            f"p50 {percentile(every, 0.5) * 1000:.0f} ms, p99 {percentile(every, 0.99) * 1000:.0f}"
            f" ms, finished {window.finished}, RSS MiB "
            + ", ".join(f"{c} {v:.0f}" for c, v in sorted(rss.items()))
            + f", objects {window.objects}"
        )

    def _why_no_callback(self, ids: list[str]) -> dict[str, Any]:
        """What the cluster and the receiver know of exports whose callback never came: the
        phase, status.notification and the receiver's answers to their deliveries."""
        answers: dict[str, list[Any]] = defaultdict(list)
        if self.t.callback_events is not None and self.t.callback_events.exists():
            for line in self.t.callback_events.read_text().splitlines():
                record = json.loads(line)
                subject = str((record.get("event") or {}).get("subject"))
                answers[subject].append(record.get("status"))
        detail: dict[str, Any] = {}
        for export_id in ids:
            try:
                body = json.loads(
                    self.t.kubectl(
                        "-n", self.t.namespace, "get", "exportjob", export_id, "-o", "json"
                    )
                )
                status = body.get("status", {})
                seen: Any = {
                    "phase": status.get("phase"),
                    "notification": status.get("notification"),
                    "notify": body.get("spec", {}).get("notify"),
                }
            except Exception as error:  # a report, not a check
                seen = f"not read: {error}"[:300]
            detail[export_id] = {
                "soak_final": self.exports[export_id].final,
                "cluster": seen,
                "receiver": answers.get(export_id, []),
            }
        unverified = sum(1 for k, v in answers.items() if k == "None" for _ in v)
        detail["_unverified_deliveries"] = unverified
        return detail

    def _operator_lines(self, ids: list[str]) -> list[str]:
        """The operators' log lines and the Events that name these exports (a report)."""
        try:
            logs = self.t.kubectl(
                "-n",
                self.t.namespace,
                "logs",
                "-l",
                "app.kubernetes.io/component=operator",
                "--tail=-1",
                "--prefix",
            )
            events = self.t.kubectl("-n", self.t.namespace, "get", "events", "-o", "wide")
        except Exception as error:  # a report, not a check
            return [f"not read: {error}"[:300]]
        lines = (logs + events).splitlines()
        return [line[:400] for line in lines if any(i in line for i in ids)][:60]

    def callbacks(self) -> Counter[str]:
        """2xx-answered deliveries per export (the receiver's log)."""
        answered: Counter[str] = Counter()
        if self.t.callback_events is None or not self.t.callback_events.exists():
            return answered
        for line in self.t.callback_events.read_text().splitlines():
            record = json.loads(line)
            if record.get("status", 204) < 300 and record.get("event"):
                answered[str(record["event"].get("subject"))] += 1
        return answered

    def component_slopes(self) -> dict[str, float]:
        """Per component, how fast the memory of its working pod grows once warm: the largest
        RSS of its pods at each sample after the warm-up (the leader's, for the operator). The
        operator's leader is deleted every few minutes, so its samples are taken per term of a
        leader, each from `term_warmup` seconds after the failover that began it (the standby
        that takes over fills its caches then), and the slope is the one the terms share, each
        term at its own level: every new leader is another process, whose heap settles up to
        50 MiB above or below the last one's (a fit across terms read that as growth)."""
        by_time: dict[str, dict[float, int]] = defaultdict(dict)
        for (component, _pod), samples in self.rss_samples.items():
            for t, v in samples:
                if t >= self.warmup:
                    # one sampling round takes a second or two: bucket its samples by 10 s
                    bucket = by_time[component]
                    key = round(t / 10) * 10.0
                    bucket[key] = max(bucket.get(key, 0), v)
        slopes = {}
        for component, points in by_time.items():
            cuts = sorted(self.failover_times) if component == "operator" else []
            terms: dict[int, list[tuple[float, int]]] = defaultdict(list)
            for t, v in sorted(points.items()):
                term = bisect.bisect_right(cuts, t)
                if term == 0 or t >= cuts[term - 1] + self.term_warmup:
                    terms[term].append((t, v))
            slope = slope_mib_per_hour(*terms.values())
            if slope is not None:
                slopes[component] = round(slope, 1)
        return slopes

    def report(self) -> dict[str, Any]:
        lost = [e.id for e in self.exports.values() if e.final is None]
        with self._pods_lock:
            # This soak's exports only: the namespace may hold earlier tests' (a split export's
            # prepare, range and finish pods were once counted as one export run four times).
            runs = {
                k: pods
                for k, pods in self._pods_succeeded.items()
                if len(pods) > 1 and k[0] in self.exports
            }
            doubled = sorted({export for export, _ in runs})
            doubled_pods: dict[str, Any] = {
                f"{export} {run}": sorted(pods.values())
                for (export, run), pods in list(runs.items())[:3]
            }
        if doubled:
            doubled_pods["_logs"] = self._operator_lines(doubled[:3])
        delivered = self.callbacks()
        callbacks_twice = sorted(k for k, n in delivered.items() if n > 1)
        callbacks_missing = self._callbacks_missing()
        slopes: dict[str, float] = {}
        for (component, pod), samples in self.rss_samples.items():
            late = [(t, v) for t, v in samples if t >= self.warmup]
            slope = slope_mib_per_hour(late)
            if slope is not None:
                slopes[f"{component}/{pod}"] = round(slope, 1)
        windows = []
        for i, w in enumerate(self.windows):
            every = [x for values in w.latencies.values() for x in values]
            windows.append(
                {
                    "window": i,
                    "requests": len(every),
                    "p50_ms": round(percentile(every, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(every, 0.99) * 1000, 1),
                    "by_kind": {
                        k: {
                            "n": len(v),
                            "p50_ms": round(percentile(v, 0.5) * 1000, 1),
                            "p99_ms": round(percentile(v, 0.99) * 1000, 1),
                        }
                        for k, v in sorted(w.latencies.items())
                    },
                    "finished": w.finished,
                    "rss_mib_max": {c: round(max(v) / MiB, 1) for c, v in w.rss.items() if v},
                    "objects": w.objects,
                }
            )
        enforce_slope = self.seconds >= 1800
        component_slopes = self.component_slopes()
        too_steep = {k: v for k, v in component_slopes.items() if v > RSS_LIMIT_MIB_PER_HOUR}
        phases = Counter(e.final or "open" for e in self.exports.values())
        failures = []
        if lost:
            failures.append(f"{len(lost)} exports lost (never final): {lost[:5]}")
        failed = [e.id for e in self.exports.values() if e.final == "Failed"]
        if failed:  # every request of the soak is valid: a failure is the product's
            failures.append(f"{len(failed)} exports Failed: {failed[:5]}")
        if doubled:
            failures.append(f"{len(doubled)} exports ran twice: {doubled[:5]}, {doubled_pods}")
        if self.doubled_events:
            failures.append(f"duplicate events made two exports: {self.doubled_events[:3]}")
        if callbacks_twice:
            failures.append(f"callbacks answered 2xx twice: {callbacks_twice[:5]}")
        if callbacks_missing:
            failures.append(
                f"callbacks never delivered: {len(callbacks_missing)} of "
                f"{sum(1 for e in self.exports.values() if e.final and e.kind != 'event')}, "
                f"e.g. {self._why_no_callback(callbacks_missing[:5])}"
            )
        if self.server_errors:
            failures.append(f"{len(self.server_errors)} 5xx answers: {self.server_errors[:3]}")
        if enforce_slope and too_steep:
            failures.append(f"RSS grows over {RSS_LIMIT_MIB_PER_HOUR} MiB/hour: {too_steep}")
        return {
            "seconds": self.seconds,
            "exports": len(self.exports),
            "phases": dict(phases),
            "kinds": dict(Counter(e.kind for e in self.exports.values())),
            "lost": len(lost),
            "doubled": len(doubled) + len(self.doubled_events) + len(callbacks_twice),
            "callbacks_delivered": sum(delivered.values()),
            "server_errors": len(self.server_errors),
            "transport_errors": dict(self.transport_errors),
            "failovers": self.failovers,
            "rss_slope_mib_per_hour": component_slopes,
            "rss_slope_mib_per_hour_per_pod": slopes,
            "rss_slope_enforced": enforce_slope,
            "failover_seconds": [round(t) for t in self.failover_times],
            "rss_samples_mib": {
                f"{component}/{pod}": [[round(t), round(v / MiB, 1)] for t, v in samples]
                for (component, pod), samples in self.rss_samples.items()
            },
            "windows": windows,
            "failures": failures,
        }


def run(
    target: Target,
    *,
    seconds: float,
    window_seconds: float = 300,
    failover_seconds: float = 600,
    big_bytes: int = 100 * MiB,
    big_every_seconds: float = 120,
    drain_seconds: float = 600,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    soak = Soak(
        target,
        seconds=seconds,
        window_seconds=window_seconds,
        failover_seconds=failover_seconds,
        big_bytes=big_bytes,
        big_every_seconds=big_every_seconds,
        log=log,
    )
    return asyncio.run(soak.run(drain_seconds))


def soak_values(secret: str) -> dict[str, object]:
    """The chart values of the soak: callbacks to the receiver on the node's address, two
    operators electing a leader, short retention (bounded object counts within the hour)."""
    return {
        "notifications": {
            "secrets": [secret],
            "allowlist": [f"{NODE_ADDRESS}/32"],
            "allowHttp": True,
        },
        "operator": {
            "replicas": 2,
            "ttlSecondsAfterFinished": 300,
            "retentionSeconds": 900,
            "extraEnv": [{"name": "EXPORTJOBS_OPERATOR_NOTIFY_BACKOFF_BASE_SECONDS", "value": "1"}],
        },
    }


def start_receiver(state_dir: Path, fail_rate: float) -> tuple[str, str, Path]:
    """hack/callback_receiver.py on the node's address; (url, secret, events file)."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "callback_receiver.py"),
            "start",
            "--host",
            NODE_ADDRESS,
            "--state-dir",
            str(state_dir),
            "--fail-rate",
            str(fail_rate),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    url = re.search(r"EXPORTJOBS_DEMO_CALLBACK_URL=(\S+)", out)
    assert url is not None, out
    secret = (state_dir / "secrets" / "secret-0").read_text().strip()
    return url.group(1), secret, state_dir / "events.jsonl"


def stop_receiver(state_dir: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "callback_receiver.py"),
            "stop",
            "--state-dir",
            str(state_dir),
        ],
        check=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--window-minutes", type=float, default=5)
    parser.add_argument("--failover-minutes", type=float, default=10)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--big-every-seconds", type=float, default=120)
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()

    from tests.support import cluster as local_cluster
    from tests.support.e2e_stack import INPUT_BUCKET, _load_stack_module, s3_client

    local_dir = REPO / ".local" / "soak"
    os.environ["EXPORTJOBS_E2E_LOCAL_DIR"] = str(local_dir)
    cluster = local_cluster.start(real_node=True)
    state = local_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    stack_module = _load_stack_module()
    namespace = "soak"
    stack = None
    try:
        env = {**os.environ, **cluster.env}
        tag = f"soak-{uuid.uuid4().hex[:6]}"
        subprocess.run(
            [str(REPO / "hack" / "images.sh"), "build"], env={**env, "IMAGE_TAG": tag}, check=True
        )
        images = [f"exportjobs-operator:{tag}", f"exportjobs-processor:{tag}"]
        subprocess.run(
            [str(REPO / "hack" / "node.sh"), "load", *images],
            env={**env, "EXPORTJOBS_LOCAL_DIR": str(local_dir)},
            check=True,
        )
        url, secret, events = start_receiver(state / "callbacks", 0.2)
        s3 = s3_client(env)
        stack = stack_module.up(
            namespace=namespace,
            state_dir=state / "stack",
            operator_image=images[0],
            processor_image=images[1],
            pull_policy="Never",
            s3_endpoint=cluster.s3.endpoint_url,
            env=env,
            extra_values=soak_values(secret),
        )

        def kubectl(*a: str) -> str:
            return subprocess.run(
                ["kubectl", *a], env=env, capture_output=True, text=True, check=True, timeout=60
            ).stdout

        target = Target(
            url=lambda: stack.webhook_url,
            token=stack.token,
            namespace=namespace,
            kubectl=kubectl,
            s3=s3,
            input_bucket=INPUT_BUCKET,
            callback_url=url,
            callback_events=events,
        )
        print(f"[soak] {args.minutes:g} min; load: {os.getloadavg()}", flush=True)
        report = run(
            target,
            seconds=args.minutes * 60,
            window_seconds=args.window_minutes * 60,
            failover_seconds=args.failover_minutes * 60,
            big_bytes=args.big_mb * MiB,
            big_every_seconds=args.big_every_seconds,
            log=lambda line: print(line, flush=True),
        )
    finally:
        stop_receiver(state / "callbacks")
        if stack is not None:
            stack.stop()
            stack_module.down(
                namespace=namespace, state_dir=state / "stack", env={**os.environ, **cluster.env}
            )
        cluster.stop()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    for failure in report["failures"]:
        print(f"[soak] FAIL: {failure}", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
