"""Issue 11's findings against the webhook on the real API server and MinIO: bounds on buckets,
no presigned URL for a forged result, hostile bytes answered 4xx, and a full event stored in time
with the webhook's memory back to its baseline afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s

from export_operator import resource
from export_operator.webhook.settings import WebhookSettings
from tests.support import hostile_http
from tests.support.cluster import LocalCluster
from tests.support.exportjobs import ExportJobs
from tests.support.net import free_port
from tests.support.webhook_process import AUTH, TOKEN, StartWebhook

BOUNDS = {
    "allowed_sources": ("s3://exports-input/", "s3://datasets/"),
    "allowed_destinations": ("s3://exports-output/tenant-a/",),
    "destination_uri": "s3://exports-output/tenant-a/",
}


def event(bucket: str, prefix: str, count: int) -> dict[str, Any]:
    """`count` object-created records, as small as S3 allows (5,000 fit in the 1 MiB limit)."""
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": f"{prefix}{i}.csv"}},
            }
            for i in range(count)
        ]
    }


async def test_out_of_bounds_requests_create_nothing(
    start_webhook: StartWebhook, exportjobs: ExportJobs
) -> None:
    hook = await start_webhook(**BOUNDS)
    for body, code in (
        ({"source": "s3://exports-output/tenant-b/secret-report.csv"}, "source-not-allowed"),
        ({"source": "s3://datasets-other/a.csv"}, "source-not-allowed"),
        (
            {"source": "s3://exports-input/a.csv", "destination": "s3://exports-input/attack/out/"},
            "destination-not-allowed",
        ),
        (
            {"source": "s3://exports-input/a.csv", "destination": "s3://datasets/"},
            "destination-not-allowed",
        ),
    ):
        status, problem, _ = await hook.request(
            "POST", "/v1/exports", json={"format": "csv", **body}
        )
        assert (status, problem["code"]) == (422, code), problem
    status, problem, _ = await hook.request(
        "POST", "/v1/events/s3?format=csv", json=event("exports-output", "tenant-b/", 1)
    )
    assert status == 422 and problem["code"] == "source-not-allowed"
    status, answer, _ = await hook.request(
        "POST", "/v1/events/s3?format=csv", json=event("exports-output", "tenant-a/api-1/", 2)
    )
    assert status == 200 and answer["status"] == "ignored", answer
    assert exportjobs.names() == []


async def test_a_forged_result_is_not_presigned(
    start_webhook: StartWebhook, exportjobs: ExportJobs, s3_client: Any
) -> None:
    hook = await start_webhook(**BOUNDS)
    status, body, _ = await hook.request(
        "POST", "/v1/exports", json={"format": "csv", "source": "s3://exports-input/a.csv"}
    )
    assert status == 202, body
    name = body["id"]
    secret_key = f"tenant-b/{name}-secret-report.csv"
    s3_client.put_object(Bucket="exports-output", Key=secret_key, Body=b"secret\n")
    own_key = f"tenant-a/{name}/a.csv"
    s3_client.put_object(Bucket="exports-output", Key=own_key, Body=b"a\n1\n")

    async def view_when(uri: str) -> dict[str, Any]:
        exportjobs.set_status(name, {"phase": "Succeeded", "result": {"uri": uri}})
        deadline = time.monotonic() + 10
        while True:
            view: dict[str, Any] = (await hook.request("GET", f"/v1/exports/{name}"))[1]
            if (view.get("result") or {}).get("uri") == uri:
                return view
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.1)

    forged = await view_when(f"s3://exports-output/{secret_key}")
    assert forged["result"]["download_url"] is None
    own = await view_when(f"s3://exports-output/{own_key}")
    async with (
        aiohttp.ClientSession() as session,
        session.get(own["result"]["download_url"]) as response,
    ):
        assert response.status == 200
        assert await response.read() == b"a\n1\n"
    status, metrics, _ = await hook.request("GET", "/metrics")
    refused = re.search(r"^exportjobs_webhook_presign_refused_total (\S+)$", metrics, re.M)
    assert refused is not None and float(refused[1]) >= 1  # one per GET of the forged view


async def test_hostile_bytes_get_4xx_on_the_real_stack(
    start_webhook: StartWebhook, exportjobs: ExportJobs
) -> None:
    hook = await start_webhook(**BOUNDS)
    port = int(hook.url.rsplit(":", 1)[1])
    failures = []
    for case in hostile_http.cases():
        answer = await hostile_http.send("127.0.0.1", port, case, token=TOKEN)
        wrong = hostile_http.judge(case, answer)
        if wrong is not None:
            failures.append((case.name, wrong))
    assert failures == []
    assert exportjobs.names() == []


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(300)
async def test_a_full_event_is_stored_in_time_and_memory_returns(
    cluster: LocalCluster, kube_api: k8s.ApiClient, namespace: str, crd: str, tmp_path: Path
) -> None:
    """The real `exportjobs-webhook` process: a 5,000-record event (the issue) is refused
    whole; a full one (500 records, the default cap) answers 202 within 15 s (SNS's delivery
    timeout) with every ExportJob stored; once they are gone again the process's RSS is back at
    its baseline (the size after the first full event): repeated events do not grow it."""
    full = WebhookSettings().events.max_event_records
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EXPORTJOBS_WEBHOOK_NAMESPACE": namespace,
        "EXPORTJOBS_WEBHOOK_HOST": "127.0.0.1",
        "EXPORTJOBS_WEBHOOK_PORT": str(port),
        "EXPORTJOBS_WEBHOOK_TOKENS": TOKEN,
        "EXPORTJOBS_WEBHOOK_ALLOWED_SOURCES": "s3://exports-input/",
        "EXPORTJOBS_WEBHOOK_ACCESS_LOG": "false",
    }
    log = (tmp_path / "webhook.log").open("wb")
    # By path, next to this interpreter: `make test` does not put .venv/bin on PATH.
    webhook = str(Path(sys.executable).parent / "exportjobs-webhook")
    process = subprocess.Popen([webhook], env=env, stdout=log, stderr=log)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{port}"
    custom = k8s.CustomObjectsApi(kube_api)

    def count() -> int:
        listed = custom.list_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL
        )
        return len(listed["items"])

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "webhook.log").read_text()
                await asyncio.sleep(0.2)

            async def post(body: dict[str, Any]) -> tuple[int, float]:
                started = time.monotonic()
                async with session.post(
                    f"{url}/v1/events/s3?format=csv", json=body, headers=AUTH
                ) as response:
                    await response.read()
                    return response.status, time.monotonic() - started

            async def emptied() -> int:
                """Delete every ExportJob, wait until the webhook's cache is empty: its RSS."""
                custom.delete_collection_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, namespace, resource.PLURAL
                )
                deadline = time.monotonic() + 60
                while True:
                    async with session.get(f"{url}/readyz", headers=AUTH) as response:
                        cached = (await response.json()).get("cached_exports")
                    if cached == 0:
                        break
                    assert time.monotonic() < deadline, f"{cached} exports still cached"
                    await asyncio.sleep(0.5)
                await asyncio.sleep(1)
                return _rss_kib(process.pid)

            started = _rss_kib(process.pid)
            status, _ = await post(event("exports-input", "huge/", 5000))
            assert status == 413
            assert count() == 0

            timings, rss, cpu = [], [], []
            for round_ in range(3):
                cpu_before = _cpu_seconds(process.pid)
                status, took = await post(event("exports-input", f"full{round_}/", full))
                cpu.append(_cpu_seconds(process.pid) - cpu_before)
                assert status == 202
                assert took < 15, f"a {full}-record event took {took:.1f} s"
                assert count() == full
                timings.append(took)
                rss.append(await emptied())
        print(
            f"{full}-record events: {', '.join(f'{t:.2f} s' for t in timings)}; RSS at start "
            f"{started // 1024} MiB, after each event (ExportJobs deleted, cache empty): "
            f"{', '.join(f'{r // 1024} MiB' for r in rss)}; webhook CPU per event "
            f"{', '.join(f'{c:.2f} s' for c in cpu)}"
        )
        # The first full event raises the allocator's high-water mark; later ones reuse it: the
        # process comes back to the same size after every event (no growth per event).
        assert max(rss[1:]) - rss[0] < 8 * 1024, (started, rss)
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
