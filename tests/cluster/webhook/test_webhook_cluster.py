"""The webhook on the real API server: create, read (watch cache), list, cancel; exactly one
ExportJob for 20 concurrent copies of one event; 503 + Retry-After, never 202, when the API server
is down, hung, or goes away under load."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from pathlib import Path
from typing import Any

import pytest

from export_operator import resource
from export_operator.resource import ExportFormat
from export_operator.webhook.services import SERVICES
from export_operator.webhook.store import StoreRejectedError
from tests.support import samples
from tests.support.exportjobs import ExportJobs
from tests.support.wait import eventually
from tests.support.webhook_process import ApiProxy, RunningWebhook, StartWebhook

SOURCE = "s3://exports-input/reports/q1 2024.csv"


async def test_create_read_list_cancel(start_webhook: StartWebhook, exportjobs: ExportJobs) -> None:
    hook = await start_webhook()
    status, body, headers = await hook.request(
        "POST",
        "/v1/exports",
        json={"source": SOURCE, "format": "parquet", "destination": "s3://exports-output/x/"},
    )
    assert status == 202, body
    name = body["id"]
    assert headers["Location"] == f"/v1/exports/{name}"
    stored = exportjobs.get(name)  # stored before the 202
    assert stored["spec"] == {
        "source": {"uri": SOURCE},
        "format": "parquet",
        "destination": {"uri": "s3://exports-output/x/"},
        "cancel": False,
        "owner": "default",
    }

    status, view, _ = await hook.request("GET", f"/v1/exports/{name}")
    assert status == 200 and view["status"] == "Pending" and view["source"] == SOURCE

    exportjobs.set_status(
        name,
        {
            "phase": "Succeeded",
            "completionTime": "2030-01-01T00:00:00Z",
            "result": {"uri": f"s3://exports-output/x/{name}/q1.parquet", "bytes": 5, "rows": 1},
        },
    )

    async def succeeded() -> Any:
        view = (await hook.request("GET", f"/v1/exports/{name}"))[1]
        return view if view["status"] == "Succeeded" else None

    view = await eventually("the watch to deliver the status", succeeded)
    url = view["result"]["download_url"]
    assert url.startswith(
        hook.app[_settings_key()].presign.s3_endpoint_url + f"/exports-output/x/{name}/q1.parquet?"
    )

    status, page, _ = await hook.request("GET", "/v1/exports", params={"phase": "Succeeded"})
    assert status == 200 and [i["id"] for i in page["items"]] == [name]
    status, page, _ = await hook.request("GET", "/v1/exports", params={"phase": "Running"})
    assert page["items"] == []

    # Finished: nothing to cancel (409 with the phase), spec.cancel stays unset.
    status, body, _ = await hook.request("DELETE", f"/v1/exports/{name}")
    assert status == 409 and body["code"] == "export-finished" and body["phase"] == "Succeeded"
    assert (
        "cancel" not in exportjobs.get(name)["spec"] or not exportjobs.get(name)["spec"]["cancel"]
    )
    status, body, _ = await hook.request(
        "POST", "/v1/exports", json={"source": SOURCE, "format": "csv"}
    )
    other = body["id"]
    status, body, _ = await hook.request("DELETE", f"/v1/exports/{other}")
    assert status == 202 and body["cancel_requested"] is True
    assert exportjobs.get(other)["spec"]["cancel"] is True
    assert (await hook.request("DELETE", "/v1/exports/no-such-export"))[0] == 404
    assert (await hook.request("GET", "/v1/exports/no-such-export"))[0] == 404


def _settings_key() -> Any:
    from export_operator.webhook.services import SETTINGS

    return SETTINGS


async def test_idempotency_key_on_the_api_server(
    start_webhook: StartWebhook, exportjobs: ExportJobs
) -> None:
    hook = await start_webhook()
    key = {"Idempotency-Key": "invoice-2024-001"}
    body = {"source": SOURCE, "format": "csv"}
    first = await hook.request("POST", "/v1/exports", json=body, headers=key)
    second = await hook.request("POST", "/v1/exports", json=body, headers=key)
    assert first[0] == second[0] == 202 and first[1]["id"] == second[1]["id"]
    other = await hook.request("POST", "/v1/exports", json={**body, "format": "jsonl"}, headers=key)
    assert other[0] == 422 and other[1]["code"] == "idempotency-key-reused"
    assert exportjobs.names() == [first[1]["id"]]


async def test_twenty_concurrent_copies_make_one_exportjob(
    start_webhook: StartWebhook, exportjobs: ExportJobs
) -> None:
    hook = await start_webhook()
    event = samples.s3_event(bucket="exports-input", key="daily/sales+report%2B1.csv", version="v1")
    results = await asyncio.gather(
        *(hook.request("POST", "/v1/events/s3?format=csv", json=event) for _ in range(20))
    )
    assert {r[0] for r in results} == {202}
    expected = resource.export_name_for_object(
        bucket="exports-input", key="daily/sales report+1.csv", version="v1",
        export_format=ExportFormat.CSV,
    )  # fmt: skip
    assert {tuple(r[1]["ids"]) for r in results} == {(expected,)}
    assert sum(r[1]["created"] for r in results) == 1
    assert exportjobs.names() == [expected]
    assert exportjobs.get(expected)["spec"]["source"]["uri"] == (
        "s3://exports-input/daily/sales report+1.csv"
    )

    newer = copy.deepcopy(event)
    newer["Records"][0]["s3"]["object"]["versionId"] = "v2"
    status, body, _ = await hook.request("POST", "/v1/events/s3?format=csv", json=newer)
    assert status == 202 and body["created"] == 1
    assert len(exportjobs.names()) == 2


async def test_api_server_rejection_is_a_store_rejection_not_unavailability(
    start_webhook: StartWebhook, exportjobs: ExportJobs
) -> None:
    """The webhook refuses everything the CRD refuses (tests/cluster/test_contract_api_server.py),
    so an ExportJob the API server rejects is built here by hand: the store reports it as
    rejected (422 `rejected-by-api-server` at the HTTP layer, tests/unit/webhook), not as the
    API server being unavailable (503)."""
    hook = await start_webhook()
    body = {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": "api-rejected", "namespace": exportjobs.namespace},
        "spec": {
            "source": {"uri": SOURCE},
            "format": "csv",
            "csv": {"delimiter": ";", "quote": ";"},
        },
    }
    with pytest.raises(StoreRejectedError, match="must differ"):
        await hook.app[SERVICES].store.create(body)
    assert exportjobs.names() == []


async def test_api_server_on_a_closed_port_gives_503(
    start_webhook: StartWebhook, dead_kubeconfig: Path, exportjobs: ExportJobs
) -> None:
    hook = await start_webhook(kubeconfig=dead_kubeconfig, wait_ready=False)
    status, problem, headers = await hook.request(
        "POST", "/v1/exports", json={"source": SOURCE, "format": "csv"}
    )
    assert status == 503 and problem["code"] == "api-server-unavailable"
    assert headers["Retry-After"] == "3"
    status, _, headers = await hook.request(
        "POST", "/v1/events/s3?format=csv", json=samples.s3_event(bucket="exports-input")
    )
    assert status == 503 and "Retry-After" in headers
    assert (await hook.request("GET", "/readyz"))[0] == 503
    assert (await hook.request("DELETE", "/v1/exports/x"))[0] == 503
    assert exportjobs.names() == []


async def _load(hook: RunningWebhook, count: int) -> list[tuple[int, Any, Any]]:
    async def one(i: int) -> tuple[int, Any, Any]:
        await asyncio.sleep(i * 0.01)
        return await hook.request(
            "POST",
            "/v1/exports",
            json={"source": f"s3://exports-input/load/{i}.csv", "format": "csv"},
        )

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_api_server_going_away_under_load_never_gives_202_for_unstored_work(
    start_webhook: StartWebhook, api_proxy: tuple[ApiProxy, Path], exportjobs: ExportJobs
) -> None:
    proxy, kubeconfig = api_proxy
    hook = await start_webhook(kubeconfig=kubeconfig)
    load = asyncio.create_task(_load(hook, 120))
    # The API server vanishes mid-load, once the first export is stored (a fixed delay left a
    # loaded machine with no 202 before the cut).
    deadline = time.monotonic() + 10
    while not await asyncio.to_thread(exportjobs.names):
        assert time.monotonic() < deadline, "nothing stored within 10 s"
        await asyncio.sleep(0.02)
    await proxy.cut()
    results = await load
    codes = [r[0] for r in results]
    assert set(codes) <= {202, 503}, codes
    assert 202 in codes and 503 in codes, codes
    assert all(r[2].get("Retry-After") for r in results if r[0] == 503)
    assert (await hook.request("GET", "/readyz"))[0] == 503
    accepted = {r[1]["id"] for r in results if r[0] == 202}
    assert accepted <= set(exportjobs.names())  # every 202 was stored

    await proxy.restore()
    status, body, _ = await hook.request(
        "POST", "/v1/exports", json={"source": SOURCE, "format": "csv"}
    )
    assert status == 202 and body["id"] in exportjobs.names()


async def test_hung_api_server_times_out_into_503(
    start_webhook: StartWebhook, api_proxy: tuple[ApiProxy, Path], exportjobs: ExportJobs
) -> None:
    proxy, kubeconfig = api_proxy
    hook = await start_webhook(kubeconfig=kubeconfig, api_timeout_seconds=1.0)
    proxy.freeze()
    started = time.monotonic()
    status, problem, headers = await hook.request(
        "POST", "/v1/exports", json={"source": SOURCE, "format": "csv"}
    )
    assert status == 503 and headers["Retry-After"] == "3", problem
    assert time.monotonic() - started < 5
    await proxy.restore()
    # What was sent before the freeze may still land: then it is stored, as the contract allows
    # (503 means "not promised", not "certainly absent").
    assert len(exportjobs.names()) <= 1


def _create_elsewhere(exportjobs: ExportJobs, name: str) -> None:
    """Create an ExportJob directly (behind the webhook's back), as another client would."""
    exportjobs.custom.create_namespaced_custom_object(
        resource.GROUP, resource.VERSION, exportjobs.namespace, resource.PLURAL,
        {"apiVersion": resource.API_VERSION, "kind": resource.KIND,
         "metadata": {"name": name},
         "spec": {"source": {"uri": SOURCE}, "format": "csv"}},
    )  # fmt: skip


async def test_cache_relists_after_the_watch_breaks(
    start_webhook: StartWebhook, api_proxy: tuple[ApiProxy, Path], exportjobs: ExportJobs
) -> None:
    proxy, kubeconfig = api_proxy
    hook = await start_webhook(kubeconfig=kubeconfig)
    await proxy.cut()
    await asyncio.sleep(0.3)
    await proxy.restore()
    # Created behind the webhook's back while its watch was broken: the cache must catch up.
    _create_elsewhere(exportjobs, "made-elsewhere")

    async def seen() -> bool:
        return (await hook.request("GET", "/v1/exports/made-elsewhere"))[0] == 200

    await eventually("the cache to see an object created during the outage", seen, timeout=40)


async def test_watch_from_an_expired_resource_version_relists(exportjobs: ExportJobs) -> None:
    from export_operator.informer import GoneError
    from export_operator.kube import KubeClient
    from export_operator.webhook.cache import ExportCache

    _create_elsewhere(exportjobs, "before-watch")
    api = await KubeClient.connect(trust_env=True)
    try:
        cache = ExportCache(namespace=exportjobs.namespace, watch_timeout=5, request_timeout=2)
        informer = cache.informer
        informer.api = api
        informer.resource_version = "1"
        with pytest.raises(GoneError):  # the API server answers 410 for a compacted version
            await informer.watch()

        await informer.list_all()
        assert cache.synced and cache.get("before-watch") is not None
        # Created after that list; the watch then resumes from a version the server no longer
        # has: only a second list can show it.
        _create_elsewhere(exportjobs, "after-list")
        informer.resource_version = "1"
        task = asyncio.create_task(cache.run(api))
        try:

            async def relisted() -> bool:
                return informer.lists >= 2 and cache.get("after-list") is not None

            await eventually("a list again after 410 Gone", relisted)
            assert cache.get("before-watch") is not None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await api.close()
