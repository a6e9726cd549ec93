"""Issue 24 on the real API server: hostile numbers and strings are 4xx and create nothing;
each principal sees, lists, cancels and presigns only its own exports; the owner is stored in
`spec.owner` (immutable, an `Owner` column of `kubectl get ej`); slow bodies time out."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client as k8s

from export_operator import resource
from export_operator.principals import parse_document
from tests.support import hostile_http, strategies
from tests.support.exportjobs import ExportJobs
from tests.support.tools import tool
from tests.support.wait import eventually
from tests.support.webhook_process import TOKEN, RunningWebhook, StartWebhook

A = {"Authorization": "Bearer token-of-team-a-0123"}
B = {"Authorization": "Bearer token-of-team-b-0123"}
PRINCIPALS = parse_document(
    """{"team-a": {"tokens": ["token-of-team-a-0123"],
                   "eventPrefixes": ["s3://exports-input/team-a/"]},
        "team-b": {"tokens": ["token-of-team-b-0123"], "eventBridgeApiKeys": ["eb-key-b"]}}"""
)
REQUEST = {"source": "s3://exports-input/a.csv", "format": "csv"}
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
async def hook(start_webhook: StartWebhook) -> RunningWebhook:
    return await start_webhook(
        principals=PRINCIPALS,
        eventbridge_api_key=("eb-key",),
        destination_uri="s3://exports-output/",
        body_timeout_seconds=1.0,
    )


async def refused(hook: RunningWebhook, path: str, body: Any, headers: dict[str, str]) -> None:
    status, answer, response_headers = await hook.request("POST", path, json=body, headers=headers)
    assert 400 <= status < 500, (status, str(answer)[:300])
    assert response_headers["Content-Type"].startswith("application/problem+json")


@HYPOTHESIS
@given(event=strategies.HOSTILE_EVENTS)
async def test_hostile_events_are_4xx_and_create_nothing(
    hook: RunningWebhook, exportjobs: ExportJobs, event: dict[str, Any]
) -> None:
    headers = {} if "Records" in event else {"x-api-key": "eb-key"}
    await refused(hook, "/v1/events/s3?format=csv", event, headers)
    assert exportjobs.names() == []


@HYPOTHESIS
@given(body=strategies.HOSTILE_REQUESTS)
async def test_hostile_requests_are_4xx_and_create_nothing(
    hook: RunningWebhook, exportjobs: ExportJobs, body: dict[str, Any]
) -> None:
    await refused(hook, "/v1/exports", body, {})
    assert exportjobs.names() == []


async def post(hook: RunningWebhook, headers: dict[str, str], **more: str) -> str:
    status, body, _ = await hook.request(
        "POST", "/v1/exports", json=REQUEST, headers={**headers, **more}
    )
    assert status == 202, body
    name: str = body["id"]
    return name


def kubectl_get_ej(namespace: str) -> dict[str, dict[str, str]]:
    """`kubectl get ej` as a user sees it: name → {COLUMN: cell}."""
    out = subprocess.run(
        [tool("kubectl"), "get", "ej", "--namespace", namespace],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    header = out[0].split()
    return {line.split()[0]: dict(zip(header, line.split(), strict=False)) for line in out[1:]}


async def test_the_owner_is_stored_immutable_and_shown(
    hook: RunningWebhook, exportjobs: ExportJobs, kube_api: k8s.ApiClient, namespace: str
) -> None:
    name = await post(hook, A)
    stored = exportjobs.get(name)
    assert stored["spec"]["owner"] == "team-a"
    assert stored["metadata"]["labels"][resource.LABEL_OWNER] == "team-a"
    exportjobs.set_status(name, {"phase": "Queued"})  # no empty cell before OWNER
    assert kubectl_get_ej(namespace)[name]["OWNER"] == "team-a"
    with pytest.raises(k8s.ApiException) as caught:
        k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name,
            {"spec": {"owner": "team-b"}},
        )  # fmt: skip
    assert caught.value.status == 422 and "immutable" in str(caught.value.body)


async def test_another_principal_cannot_read_list_cancel_or_presign(
    hook: RunningWebhook, exportjobs: ExportJobs
) -> None:
    mine = await post(hook, A)
    theirs = await post(hook, B)
    exportjobs.set_status(mine, {"phase": "Running"})
    for method in ("GET", "DELETE"):
        status, body, _ = await hook.request(method, f"/v1/exports/{mine}", headers=B)
        assert (status, body["code"]) == (404, "not-found"), method
    assert not exportjobs.get(mine)["spec"].get("cancel")
    status, listed, _ = await hook.request("GET", "/v1/exports", headers=B)
    assert [item["id"] for item in listed["items"]] == [theirs]
    exportjobs.set_status(
        mine, {"phase": "Succeeded", "result": {"uri": f"s3://exports-output/{mine}/a.csv"}}
    )

    async def presigned_for_a() -> Any:
        # The webhook reads its informer's cache: the Succeeded status arrives by watch.
        status, view, _ = await hook.request("GET", f"/v1/exports/{mine}", headers=A)
        assert status == 200, view
        return (view.get("result") or {}).get("download_url")

    await eventually("the owner's GET to show a presigned URL", presigned_for_a)
    status, body, _ = await hook.request("GET", f"/v1/exports/{mine}", headers=B)
    assert (status, body["code"]) == (404, "not-found")
    # The unnamed token is the admin `default`: it sees both.
    status, listed, _ = await hook.request("GET", "/v1/exports")
    assert {item["id"] for item in listed["items"]} == {mine, theirs}


async def test_idempotency_keys_are_per_principal(
    hook: RunningWebhook, exportjobs: ExportJobs
) -> None:
    a = await post(hook, A, **{"Idempotency-Key": "order-7"})
    b = await post(hook, B, **{"Idempotency-Key": "order-7"})
    assert a != b
    assert exportjobs.get(b)["spec"]["owner"] == "team-b"
    assert await post(hook, A, **{"Idempotency-Key": "order-7"}) == a


async def test_event_routes_and_keys_name_the_owner(
    hook: RunningWebhook, exportjobs: ExportJobs
) -> None:
    bound = strategies.s3_event("exports-input", "team-a/x.csv")
    status, body, _ = await hook.request("POST", "/v1/events/s3?format=csv", json=bound, headers=B)
    assert (status, body["code"]) == (403, "forbidden")
    assert exportjobs.names() == []
    status, body, _ = await hook.request("POST", "/v1/events/s3?format=csv", json=bound, headers=A)
    assert status == 202
    assert exportjobs.get(body["ids"][0])["spec"]["owner"] == "team-a"
    event = strategies.eventbridge_event("exports-input", "b/y.csv")
    status, body, _ = await hook.request(
        "POST",
        "/v1/events/s3?format=csv",
        json=event,
        headers={"x-api-key": "eb-key-b", "Authorization": ""},  # the key alone
    )
    assert status == 202, body
    assert exportjobs.get(body["ids"][0])["spec"]["owner"] == "team-b"


async def test_an_authenticated_slow_body_times_out(
    hook: RunningWebhook, exportjobs: ExportJobs
) -> None:
    host, port = hook.url.removeprefix("http://").split(":")
    status, elapsed = await hostile_http.send_slowly(
        host, int(port), token=TOKEN, target="/v1/exports", interval=0.2, limit=15
    )
    assert status == 408 and elapsed < 4, (status, elapsed)
    assert exportjobs.names() == []
