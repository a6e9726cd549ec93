"""Webhook benchmark on the real API server.

1. Sustained `POST /v1/exports` through the webhook (run as `exportjobs-webhook`, a separate
   process, as deployed) vs. a raw kubernetes_asyncio client creating the same number of
   ExportJobs at the same concurrency (baseline, same run), in rounds whose order alternates.
   The baseline creates the object the webhook creates (its labels, annotations and owner: the
   same work for the API server; `--minimal-object`: a one-label object, which the API server
   creates faster). Goal: >= 0.8x the baseline rate, median of the rounds.
2. `GET /v1/exports/{id}` served from the watch-fed cache, load from `wrk` (Debian package) on the
   same machine, falling back to an aiohttp client in a separate process. Goal: >= 2,000 req/s
   with p99 <= 20 ms on one webhook process.

Needs a cluster: `source .local/cluster.env` (make cluster-up) first. Usage:
    .venv/bin/python bench/bench_webhook.py [--quick] [--creates N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes_asyncio import client as aclient

from export_operator import resource
from export_operator.kube import new_api_client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.net import free_port  # noqa: E402

CRD_FILE = REPO / "charts" / "exportjobs" / "crds" / "exportjobs.dev_exportjobs.yaml"
TOKEN = "bench-token"


def apply_crd(api: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD_FILE.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while True:
        conds = ext.read_custom_resource_definition(body["metadata"]["name"]).status.conditions
        if any(c.type == "Established" and c.status == "True" for c in conds or []):
            return
        assert time.monotonic() < deadline
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, latencies: list[float], elapsed: float) -> dict[str, float]:
    rate = len(latencies) / elapsed
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(f"  {name:<28} {len(latencies):>6} in {elapsed:6.2f}s = {rate:8.1f}/s  "
          f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")  # fmt: skip
    return {"rate": rate, "p50": p50, "p99": p99}


def body_for(i: int, run: str) -> dict[str, Any]:
    return {"source": f"s3://exports-input/bench/{run}/{i}.csv", "format": "csv"}


def raw_object(i: int, run: str, *, owner: str | None) -> dict[str, Any]:
    """The baseline's ExportJob: the minimal one, or with `owner` the one the webhook creates for
    the same request (its labels, annotations and owner: what the API server stores, validates,
    tracks in managedFields and sends to the watches)."""
    spec: dict[str, Any] = {"source": {"uri": body_for(i, run)["source"]}, "format": "csv"}
    if owner is None:
        meta: dict[str, Any] = {"name": f"raw-{run}-{i}", "labels": {"bench": run}}
    else:
        spec["owner"] = owner
        meta = {
            "name": f"api-{os.urandom(12).hex()}",
            "labels": {
                resource.LABEL_SOURCE_KIND: "api",
                resource.LABEL_MANAGED_BY: "exportjobs-webhook",
                resource.LABEL_OWNER: owner,
            },
            "annotations": {
                resource.ANNOTATION_REQUEST_SHA256: os.urandom(32).hex(),
                resource.ANNOTATION_SUBMITTED: f"{time.time_ns():019d}",
            },
        }
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": meta,
        "spec": spec,
    }


async def raw_creates(
    namespace: str, count: int, concurrency: int, run: str, *, owner: str | None = None
) -> dict[str, float]:
    # The same client configuration as the webhook's, so the baseline is the best raw client.
    api = await new_api_client(trust_env=False)
    objects = aclient.CustomObjectsApi(api)
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            obj = raw_object(i, run, owner=owner)
            started = time.perf_counter()
            await objects.create_namespaced_custom_object(
                resource.GROUP, resource.VERSION, namespace, resource.PLURAL, obj
            )
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await api.close()
    return summary("raw kubernetes_asyncio", latencies, elapsed)


async def webhook_creates(url: str, count: int, concurrency: int, run: str) -> dict[str, Any]:
    latencies: list[float] = []
    ids: list[str] = []
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as session:

        async def worker() -> None:
            for i in queue:
                started = time.perf_counter()
                async with session.post(f"{url}/v1/exports", json=body_for(i, run)) as response:
                    payload = await response.json()
                    assert response.status == 202, payload
                latencies.append(time.perf_counter() - started)
                ids.append(payload["id"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    result: dict[str, Any] = summary("webhook POST /v1/exports", latencies, elapsed)
    result["ids"] = ids
    return result


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float] | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {TOKEN}", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert errors is None, out
    print(f"  wrk -t1 -c{connections} -d{seconds}s: {rate:8.1f} req/s  p50 {ms('50'):.2f} ms  "
          f"p99 {ms('99'):.2f} ms")  # fmt: skip
    return {"rate": rate, "p50": ms("50"), "p99": ms("99")}


CLIENT = r"""
import asyncio, sys, time, aiohttp
url, seconds, conc, token = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
async def main():
    lat = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + token},
                                     connector=aiohttp.TCPConnector(limit=conc)) as s:
        end = time.perf_counter() + seconds
        async def w():
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with s.get(url) as r:
                    await r.read(); assert r.status == 200
                lat.append(time.perf_counter() - t)
        t0 = time.perf_counter(); await asyncio.gather(*(w() for _ in range(conc)))
        el = time.perf_counter() - t0
    lat.sort(); print(len(lat) / el, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000)
asyncio.run(main())
"""


def run_aiohttp_client(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, url, str(seconds), str(connections), TOKEN],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    rate, p50, p99 = map(float, out)
    print(f"  aiohttp client (separate process), {connections} conns: {rate:8.1f} req/s  "
          f"p50 {p50:.2f} ms  p99 {p99:.2f} ms")  # fmt: skip
    return {"rate": rate, "p50": p50, "p99": p99}


PRINCIPALS = {
    "bench": {"tokens": [TOKEN], "ratePerSecond": 100_000, "burst": 100_000,
              "maxQueued": 10_000_000},
    "other": {"tokens": ["bench-other-token-0123"], "ratePerSecond": 10, "burst": 10},
}  # fmt: skip
"""`--principals`: the bench's token is a named, non-admin principal with a rate limit and a
queue cap (set high enough never to refuse), so every request pays for principals, the token
bucket and the queue count."""


def start_webhook(
    namespace: str, port: int, *, principals: bool = False
) -> subprocess.Popen[bytes]:
    credentials = (
        {"EXPORTJOBS_WEBHOOK_PRINCIPALS": json.dumps(PRINCIPALS)}
        if principals
        else {"EXPORTJOBS_WEBHOOK_TOKENS": TOKEN}
    )
    env = {
        **os.environ,
        "EXPORTJOBS_WEBHOOK_NAMESPACE": namespace,
        **credentials,
        "EXPORTJOBS_WEBHOOK_ALLOWED_SOURCES": "s3://exports-input/",
        "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
        "EXPORTJOBS_WEBHOOK_PORT": str(port),
        "EXPORTJOBS_WEBHOOK_ACCESS_LOG": "false",
        "EXPORTJOBS_WEBHOOK_LOG_LEVEL": "WARNING",
    }
    exe = Path(sys.executable).parent / "exportjobs-webhook"
    return subprocess.Popen([str(exe)], env=env)


async def wait_ready(url: str, *, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "webhook not ready"
            await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace, namespace: str) -> int:
    run = uuid.uuid4().hex[:6]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webhook = start_webhook(namespace, port, principals=args.principals)
    try:
        await wait_ready(url)
        if args.principals:
            print("principals on: a named principal with a token bucket and a queue cap")
        print(
            f"POST: {args.creates} creates, concurrency {args.concurrency} (webhook = "
            "exportjobs-webhook process; baseline = raw client in this process)"
        )
        owner = None  # the principal the webhook records as the owner
        if not args.minimal_object:
            owner = "bench" if args.principals else "default"
            print("baseline objects: the webhook's (its labels, annotations and owner)")
        # Warm both paths (connections, TLS, discovery) before measuring.
        await raw_creates(namespace, args.concurrency, args.concurrency, run + "w")
        await webhook_creates(url, args.concurrency, args.concurrency, run + "w")
        ratios: list[float] = []
        seconds: dict[str, list[float]] = {"first": [], "second": []}
        for round_ in range(args.rounds):
            # Each round adds 2 x creates objects to the API server, and a create gets slower as
            # its store grows: whichever side goes second in a round meets the bigger store. So
            # the order alternates (raw first in even rounds, the webhook first in odd ones).
            cpu = {"raw": 0.0, "hook": 0.0, "load": 0.0}
            rates: dict[str, float] = {}
            order = ("raw", "hook") if round_ % 2 == 0 else ("hook", "raw")
            for position, side in zip(("first", "second"), order, strict=True):
                if side == "raw":
                    began = time.process_time()
                    raw = await raw_creates(
                        namespace, args.creates, args.concurrency, f"{run}r{round_}", owner=owner
                    )
                    cpu["raw"] = (time.process_time() - began) / args.creates * 1000
                    rates["raw"] = raw["rate"]
                else:
                    began_hook, began = cpu_seconds(webhook.pid), time.process_time()
                    hook = await webhook_creates(
                        url, args.creates, args.concurrency, f"{run}h{round_}"
                    )
                    cpu["hook"] = (cpu_seconds(webhook.pid) - began_hook) / args.creates * 1000
                    cpu["load"] = (time.process_time() - began) / args.creates * 1000
                    rates["hook"] = hook["rate"]
                seconds[position].append(args.creates / rates[side])
            ratios.append(rates["hook"] / rates["raw"])
            print(
                f"  round {round_ + 1} ({' first, '.join(order)} second): ratio webhook/raw "
                f"{ratios[-1]:.2f}x; CPU per create: raw client {cpu['raw']:.2f} ms, webhook "
                f"process {cpu['hook']:.2f} ms (its HTTP client, in this process: "
                f"{cpu['load']:.2f} ms)"
            )
        if args.rounds > 1:
            first, second = (sum(seconds[k]) / len(seconds[k]) for k in ("first", "second"))
            print(
                f"  order effect: a side took {second / first:.2f}x as long going second in its "
                f"round as going first (mean {second:.2f} s vs {first:.2f} s)"
            )
        ratio = sorted(ratios)[len(ratios) // 2]
        print(f"  ratio webhook/raw (median of {len(ratios)}): {ratio:.2f}x (goal >= 0.8x)")

        target = f"{url}/v1/exports/{hook['ids'][0]}"
        print(f"GET {target.replace(url, '')} for {args.seconds}s, {args.connections} connections")
        got = run_wrk(target, args.seconds, args.connections)
        if got is None:
            print(
                "  wrk not found (apt-get install wrk; `make bench` installs it as root): "
                "measured with the Python fallback client, which saturates before the webhook "
                "does, so this figure is a lower bound"
            )
            got = run_aiohttp_client(target, args.seconds, args.connections)
        get_ok = got["rate"] >= 2000 and got["p99"] <= 20
        print(f"GET goal (>= 2000 req/s, p99 <= 20 ms): {'met' if get_ok else 'NOT met'}")
        return 0 if ratio >= 0.8 and get_ok else 1
    finally:
        webhook.terminate()
        webhook.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (smoke test)")
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating POST rounds")
    parser.add_argument("--seconds", type=int, default=15, help="GET load duration")
    parser.add_argument("--connections", type=int, default=16, help="GET load connections")
    parser.add_argument(
        "--principals",
        action="store_true",
        help="run the webhook with named principals, a rate limit and a queue cap",
    )
    parser.add_argument(
        "--minimal-object",
        action="store_true",
        help="the baseline creates a minimal one-label ExportJob instead of the object the "
        "webhook creates (its labels, annotations and owner): less work for the API server",
    )
    args = parser.parse_args()
    if args.quick:
        args.creates, args.seconds, args.rounds = 100, 3, 1
    return in_namespace("bench-webhook", lambda namespace, api: bench(args, namespace))


def in_namespace(prefix: str, run: Callable[[str, k8s.ApiClient], Coroutine[Any, Any, int]]) -> int:
    """Run `run(namespace, api)` in a fresh namespace of the cluster `$KUBECONFIG` names (the
    CRD applied), deleted afterwards; 2 without a cluster."""
    if not os.environ.get("KUBECONFIG"):
        print("KUBECONFIG is not set: `source .local/cluster.env` first", file=sys.stderr)
        return 2
    api = k8s_config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    apply_crd(api)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:
        return asyncio.run(run(namespace, api))
    finally:
        core.delete_namespace(namespace)
        api.close()


if __name__ == "__main__":
    sys.exit(main())
