"""Webhook memory with many retained ExportJobs, on the real API server.

Creates N ExportJobs (default 50,000) the way they look at the end of their life (spec with an
owner, labels, annotations; the status patched to Succeeded with progress, result, notification
and four conditions, so managedFields has two writers), starts `exportjobs-webhook` as a
separate process, waits until its watch cache holds all N, and prints its RSS: at start with
none, with N, and after they are deleted, per retained export, and against the chart's default
memory limit (256 Mi). Goal: the N exports fit the limit with margin, at most 2 KB each.

Needs a cluster: `source .local/cluster.env` (make cluster-up) first. Usage:
    .venv/bin/python bench/bench_webhook_memory.py [--exports N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_webhook import TOKEN, free_port, in_namespace, start_webhook, wait_ready
from export_operator import resource
from export_operator.kube import new_api_client

LIMIT_MIB = 256
"""The chart's default memory limit of a webhook pod (values.yaml, webhook.resources)."""
NOW = "2026-12-06T22:00:00Z"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def export_body(i: int, run: str) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {
            "name": f"mem-{run}-{i}",
            "labels": {
                resource.LABEL_SOURCE_KIND: "api",
                resource.LABEL_MANAGED_BY: "exportjobs-webhook",
                resource.LABEL_OWNER: f"team-{i % 8}",
            },
            "annotations": {resource.ANNOTATION_REQUEST_SHA256: f"{i:064x}"},
        },
        "spec": {
            "source": {"uri": f"s3://exports-input/team-{i % 8}/reports/2026/12/{i}.csv"},
            "format": "parquet",
            "destination": {"uri": f"s3://exports-output/team-{i % 8}/"},
            "owner": f"team-{i % 8}",
            "notify": {"url": "https://hooks.example.com/exports"},
        },
    }


def final_status(name: str, i: int) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "jobName": f"export-{name}",
            "attempts": 1,
            "startTime": NOW,
            "completionTime": NOW,
            "progress": {"rowsRead": 1_000_000 + i, "bytesRead": 80_000_000, "percent": 100},
            "result": {
                "uri": f"s3://exports-output/team-{i % 8}/{name}/{i}.parquet",
                "bytes": 12_345_678,
                "rows": 1_000_000 + i,
                "sha256": f"{i:064x}",
                "format": "parquet",
            },
            "notification": {"state": "Delivered", "attempts": 1, "lastAttemptTime": NOW},
            "conditions": [
                {"type": t, "status": "True", "reason": t, "message": f"{t} at {NOW}",
                 "lastTransitionTime": NOW}
                for t in ("Accepted", "Queued", "Running", "Succeeded")
            ],
        }
    }  # fmt: skip


async def create_retained(namespace: str, count: int, concurrency: int, run: str) -> float:
    """Create `count` finished-looking ExportJobs; the seconds it took."""
    api = await new_api_client(trust_env=False)
    base = (
        f"{api.configuration.host}/apis/{resource.GROUP}/{resource.VERSION}"
        f"/namespaces/{namespace}/{resource.PLURAL}"
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    await api.update_params_for_auth(headers, [], ["BearerToken"])
    session = api.rest_client.pool_manager
    pending = iter(range(count))

    async def call(method: str, url: str, body: Any, content_type: str) -> None:
        for attempt in range(5):
            async with session.request(
                method, url, data=json.dumps(body),
                headers={**headers, "Content-Type": content_type},
            ) as response:  # fmt: skip
                await response.read()
                if response.status < 300:
                    return
                if response.status not in (429, 500, 503, 504) or attempt == 4:
                    raise RuntimeError(f"{method} {url}: {response.status}")
            await asyncio.sleep(0.5 * (attempt + 1))

    async def worker() -> None:
        for i in pending:
            body = export_body(i, run)
            name = body["metadata"]["name"]
            await call("POST", base, body, "application/json")
            await call(
                "PATCH", f"{base}/{name}/status", final_status(name, i),
                "application/merge-patch+json",
            )  # fmt: skip
            if i and i % 5000 == 0:
                print(f"  {i} created", flush=True)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await api.close()
    return time.monotonic() - started


async def cached_exports(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/readyz", headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        body = await response.json()
        return int(body.get("cached_exports", -1))


async def wait_cached(url: str, count: int, within: float) -> float:
    started = time.monotonic()
    while (cached := await cached_exports(url)) != count:
        if time.monotonic() - started > within:
            raise TimeoutError(f"the webhook caches {cached} exports, not {count}")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def bench(args: argparse.Namespace, namespace: str, custom: k8s.CustomObjectsApi) -> int:
    run = uuid.uuid4().hex[:6]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"creating {args.exports} finished ExportJobs (concurrency {args.concurrency})")
    seconds = await create_retained(namespace, args.exports, args.concurrency, run)
    print(f"  created and status-patched in {seconds:.0f} s")
    # An empty webhook first, in another namespace, for the baseline RSS of the process.
    empty_ns = f"{namespace}-empty"
    k8s.CoreV1Api(custom.api_client).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=empty_ns))
    )
    try:
        empty = start_webhook(empty_ns, port)
        try:
            await wait_ready(url)
            await asyncio.sleep(2)
            baseline = rss_mib(empty.pid)
        finally:
            empty.terminate()
            empty.wait(timeout=15)
    finally:
        k8s.CoreV1Api(custom.api_client).delete_namespace(empty_ns)
    webhook = start_webhook(namespace, port)
    try:
        await wait_ready(url, within=600)  # its first list of N objects
        synced = await wait_cached(url, args.exports, within=600)
        await asyncio.sleep(2)
        full = rss_mib(webhook.pid)
        per_export = (full - baseline) * 1024 * 1024 / args.exports
        print(f"webhook RSS: {baseline:.1f} MiB with no exports; {full:.1f} MiB with "
              f"{args.exports} cached (synced {synced:.1f} s after ready)")  # fmt: skip
        print(f"  {per_export:.0f} bytes per retained export (goal <= 2048); "
              f"limit {LIMIT_MIB} MiB: margin {LIMIT_MIB - full:.1f} MiB "
              f"({(LIMIT_MIB - full) / LIMIT_MIB:.0%})")  # fmt: skip
        print("deleting them all")
        custom.delete_collection_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL
        )
        await wait_cached(url, 0, within=600)
        await asyncio.sleep(2)
        after = rss_mib(webhook.pid)
        print(f"  webhook RSS after deletion: {after:.1f} MiB")
        return 0 if per_export <= 2048 and full < LIMIT_MIB * 0.75 else 1
    finally:
        webhook.terminate()
        webhook.wait(timeout=15)


def main() -> int:
    # A list page of 500 finished ExportJobs can take more than the default 20 s on a busy
    # machine (the first run at load 18 timed out): the webhook's API calls get 30 s each.
    os.environ.setdefault("EXPORTJOBS_WEBHOOK_API_TIMEOUT_SECONDS", "30")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    return in_namespace(
        "bench-memory", lambda namespace, api: bench(args, namespace, k8s.CustomObjectsApi(api))
    )


if __name__ == "__main__":
    sys.exit(main())
