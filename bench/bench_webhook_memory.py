"""Webhook memory with many retained ExportJobs, on the real API server.

Creates N ExportJobs (default 50,000) the way they look at the end of their life (spec with an
owner, labels, annotations; the status patched to Succeeded with progress, result, notification
and four conditions, so managedFields has two writers), starts `exportjobs-webhook` as a
separate process, waits until its watch cache holds all N, and prints its RSS: at start with
none, with N, and after they are deleted, per retained export, and against the chart's default
memory limit (256 Mi). Goal: the N exports fit the limit with margin, at most 2 KB each.

How they are made (`--via`): `etcd` (the default on the local cluster of hack/cluster.sh) creates
and status-patches one through the API server, reads it back, and writes N objects like it
(same managedFields, labels, annotations, spec and status shape; their own names, uids, URIs
and digests) straight into the cluster's etcd, 100 per transaction: 50,000 in about a minute
instead of over an hour of creates and status patches on a busy 2-core machine. The webhook
reads them as always, through the API server (its paged list, then its watch); the deletion is
one etcd range delete, which the API server's watch turns into 50,000 DELETED events. `api`
creates and patches each one through the API server (any cluster).

Needs a cluster: `source .local/cluster.env` (make cluster-up) first. Usage:
    .venv/bin/python bench/bench_webhook_memory.py [--exports N] [--via etcd|api] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
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
from export_operator.webhook.cache import TRIM_DELAY_SECONDS

LIMIT_MIB = 256
"""The chart's default memory limit of a webhook pod (values.yaml, webhook.resources)."""
NOW = "2026-12-06T22:00:00Z"


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS) or at its peak so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


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


def local_etcd() -> str | None:
    """The client URL of the local cluster's etcd (hack/cluster.sh: kwok's config of the cluster
    beside the kubeconfig), or None for another cluster."""
    kubeconfig = Path(os.environ["KUBECONFIG"])
    name = os.environ.get("EXPORTJOBS_CLUSTER_NAME", "exportjobs")
    config = kubeconfig.parent / "kwok" / "clusters" / name / "kwok.yaml"
    found = re.search(r"--etcd-servers=(\S+)", config.read_text()) if config.exists() else None
    return found.group(1).split(",")[0] if found else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def etcd_prefix(namespace: str) -> str:
    """Where the API server keeps the ExportJobs of `namespace` (its default --etcd-prefix)."""
    return f"/registry/{resource.GROUP}/{resource.PLURAL}/{namespace}/"


async def write_through_etcd(etcd: str, namespace: str, count: int, run: str) -> float:
    """Create one finished ExportJob through the API server, then `count - 1` like it straight
    into etcd; the seconds it took."""
    started = time.monotonic()
    await create_retained(namespace, 1, 1, run)
    api = await new_api_client(trust_env=False)
    try:
        headers = {"Accept": "application/json"}
        await api.update_params_for_auth(headers, [], ["BearerToken"])
        url = (
            f"{api.configuration.host}/apis/{resource.GROUP}/{resource.VERSION}"
            f"/namespaces/{namespace}/{resource.PLURAL}/mem-{run}-0"
        )
        async with api.rest_client.pool_manager.get(url, headers=headers) as response:
            template = await response.json()
    finally:
        await api.close()
    meta = template["metadata"]
    prefix = etcd_prefix(namespace)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{etcd}/v3/kv/range", json={"key": _b64(prefix + meta["name"]), "keys_only": True}
        ) as response:
            if int((await response.json()).get("count", 0)) != 1:
                raise RuntimeError(f"the API server does not keep ExportJobs under {prefix}")

        def stored(i: int) -> tuple[str, str]:
            body = export_body(i, run)
            name = body["metadata"]["name"]
            body["metadata"].update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=meta["creationTimestamp"],
                managedFields=meta.get("managedFields", []),
            )
            body.update(final_status(name, i))
            return prefix + name, json.dumps(body, separators=(",", ":"))

        pending = iter(range(1, count))
        written = 1

        async def writer() -> None:
            nonlocal written
            while batch := [stored(i) for i in itertools.islice(pending, 100)]:
                ops = [{"requestPut": {"key": _b64(k), "value": _b64(v)}} for k, v in batch]
                for attempt in range(6):  # a busy etcd times out (503): puts are idempotent
                    async with session.post(f"{etcd}/v3/kv/txn", json={"success": ops}) as response:
                        answer = await response.json()
                    if response.status == 200 and "error" not in answer:
                        break
                    if attempt == 5:
                        raise RuntimeError(f"etcd txn: {response.status} {answer}")
                    await asyncio.sleep(1.0 * (attempt + 1))
                written += len(batch)
                if written % 5000 < len(batch):
                    print(f"  {written} written", flush=True)

        await asyncio.gather(*(writer() for _ in range(4)))
    return time.monotonic() - started


async def delete_through_etcd(etcd: str, namespace: str) -> None:
    prefix = etcd_prefix(namespace)
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{etcd}/v3/kv/deleterange", json={"key": _b64(prefix), "range_end": _b64(end)}
        ) as response,
    ):
        answer = await response.json()
        print(f"  etcd deleted {answer.get('deleted', 0)} objects")


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
    etcd = local_etcd() if args.via == "etcd" else None
    if args.via == "etcd" and etcd is None:
        print("no local etcd found (not hack/cluster.sh's cluster): use --via api", file=sys.stderr)
        return 2
    if etcd is not None:
        print(f"writing {args.exports} finished ExportJobs into etcd ({etcd})")
        seconds = await write_through_etcd(etcd, namespace, args.exports, run)
    else:
        print(f"creating {args.exports} finished ExportJobs (concurrency {args.concurrency})")
        seconds = await create_retained(namespace, args.exports, args.concurrency, run)
    print(f"  made in {seconds:.0f} s")
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
        peak = rss_mib(webhook.pid, "VmHWM")
        per_export = (full - baseline) * 1024 * 1024 / args.exports
        print(f"webhook RSS: {baseline:.1f} MiB with no exports; {full:.1f} MiB with "
              f"{args.exports} cached (synced {synced:.1f} s after ready); "
              f"peak {peak:.1f} MiB (the first list)")  # fmt: skip
        print(f"  {per_export:.0f} bytes per retained export (goal <= 2048); "
              f"limit {LIMIT_MIB} MiB: margin {LIMIT_MIB - full:.1f} MiB "
              f"({(LIMIT_MIB - full) / LIMIT_MIB:.0%})")  # fmt: skip
        print("deleting them all")
        if etcd is not None:
            await delete_through_etcd(etcd, namespace)
        else:
            custom.delete_collection_namespaced_custom_object(
                resource.GROUP, resource.VERSION, namespace, resource.PLURAL
            )
        await wait_cached(url, 0, within=600)
        await asyncio.sleep(TRIM_DELAY_SECONDS + 2)  # the cache gives freed memory back
        after = rss_mib(webhook.pid)
        print(f"  webhook RSS after deletion: {after:.1f} MiB")
        return 0 if per_export <= 2048 and peak < LIMIT_MIB * 0.75 else 1
    finally:
        webhook.terminate()
        webhook.wait(timeout=15)


def main() -> int:
    # A list page of 500 finished ExportJobs can take more than the default 20 s on a busy
    # machine (the first run at load 18 timed out): the webhook's API calls get 30 s each.
    os.environ.setdefault("EXPORTJOBS_WEBHOOK_API_TIMEOUT_SECONDS", "30")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=50_000)
    parser.add_argument("--via", choices=["etcd", "api"], default="etcd")
    parser.add_argument("--concurrency", type=int, default=32, help="API creates at once (api)")
    args = parser.parse_args()
    return in_namespace(
        "bench-memory", lambda namespace, api: bench(args, namespace, k8s.CustomObjectsApi(api))
    )


if __name__ == "__main__":
    sys.exit(main())
