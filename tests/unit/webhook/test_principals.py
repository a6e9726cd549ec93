"""Issue 24's BOLA cases through the app (in-memory store): each principal sees, lists,
cancels and presigns only its own exports; Idempotency-Keys are per principal; event routes
bound to a principal; the older unnamed tokens are the admin `default`; rate and queue limits."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator.principals import PrincipalConfig, Principals, parse_document
from export_operator.webhook.settings import WebhookSettings
from tests.support import strategies
from tests.support.webhook_harness import AUTH, MakeHarness

A = {"Authorization": "Bearer token-of-team-a-0123"}
B = {"Authorization": "Bearer token-of-team-b-0123"}
ADMIN = {"Authorization": "Bearer token-of-the-admin-01"}
PRINCIPALS = parse_document(
    """{
      "team-a": {"tokens": ["token-of-team-a-0123"], "eventBridgeApiKeys": ["eb-key-a"],
                 "eventPrefixes": ["s3://exports-input/team-a/"]},
      "team-b": {"tokens": ["token-of-team-b-0123"]},
      "ops": {"tokens": ["token-of-the-admin-01"], "admin": true}
    }"""
)
REQUEST = {"source": "s3://exports-input/a.csv", "format": "csv"}


async def post(h: Any, headers: dict[str, str], **extra: Any) -> Any:
    response = await h.client.post(
        "/v1/exports", json=REQUEST, headers={**headers, **extra.pop("more", {})}
    )
    return response.status, await response.json(), response


@pytest.fixture
async def h(make_harness: MakeHarness) -> Any:
    return await make_harness(principals=PRINCIPALS)


async def test_each_export_records_its_owner(h: Any) -> None:
    status, body, _ = await post(h, A)
    assert status == 202
    stored = h.store.objects[body["id"]]
    assert stored["spec"]["owner"] == "team-a"
    assert stored["metadata"]["labels"]["exportjobs.dev/owner"] == "team-a"
    got = await h.client.get(f"/v1/exports/{body['id']}", headers=A)
    assert (await got.json())["owner"] == "team-a"


async def test_another_principal_cannot_read_cancel_or_presign(h: Any) -> None:
    _, body, _ = await post(h, A)
    name = body["id"]
    h.store.set_status(name, {"phase": "Running"})
    for method in ("GET", "DELETE"):
        response = await h.client.request(method, f"/v1/exports/{name}", headers=B)
        assert response.status == 404, method
        assert (await response.json())["code"] == "not-found"
    assert "cancel" not in h.store.objects[name]["spec"]
    h.store.set_status(
        name, {"phase": "Succeeded", "result": {"uri": f"s3://exports-output/{name}/a.csv"}}
    )
    response = await h.client.get(f"/v1/exports/{name}", headers=B)
    assert response.status == 404  # no presigned URL for B
    response = await h.client.get(f"/v1/exports/{name}", headers=ADMIN)
    assert response.status == 200


async def test_a_list_shows_only_the_callers_exports(h: Any) -> None:
    a = {(await post(h, A))[1]["id"] for _ in range(3)}
    b = {(await post(h, B))[1]["id"] for _ in range(2)}
    for headers, expected in ((A, a), (B, b), (ADMIN, a | b)):
        listed = await (await h.client.get("/v1/exports?limit=2", headers=headers)).json()
        names = {item["id"] for item in listed["items"]}
        while listed["continue"]:
            page = await h.client.get(
                f"/v1/exports?limit=2&continue={listed['continue']}", headers=headers
            )
            listed = await page.json()
            names |= {item["id"] for item in listed["items"]}
        assert names == expected


async def test_idempotency_keys_are_per_principal(h: Any) -> None:
    key = {"Idempotency-Key": "order-42"}
    status_a, body_a, _ = await post(h, A, more=key)
    status_b, body_b, _ = await post(h, B, more=key)
    assert (status_a, status_b) == (202, 202)
    assert body_a["id"] != body_b["id"]
    assert h.store.objects[body_b["id"]]["spec"]["owner"] == "team-b"
    again = await post(h, A, more=key)
    assert again[0] == 202 and again[1]["id"] == body_a["id"]


async def test_an_event_route_bound_to_a_principal(h: Any) -> None:
    bound = strategies.s3_event("exports-input", "team-a/x.csv")
    response = await h.client.post("/v1/events/s3?format=csv", json=bound, headers=B)
    assert response.status == 403
    assert not h.store.objects
    response = await h.client.post("/v1/events/s3?format=csv", json=bound, headers=ADMIN)
    assert response.status == 202
    [name] = (await response.json())["ids"]
    assert h.store.objects[name]["spec"]["owner"] == "team-a"
    free = strategies.s3_event("exports-input", "other/y.csv")
    response = await h.client.post("/v1/events/s3?format=csv", json=free, headers=B)
    [name] = (await response.json())["ids"]
    assert h.store.objects[name]["spec"]["owner"] == "team-b"


async def test_the_eventbridge_key_is_its_principal(h: Any) -> None:
    event = strategies.eventbridge_event("exports-input", "team-a/z.csv")
    response = await h.client.post(
        "/v1/events/s3?format=csv", json=event, headers={"x-api-key": "eb-key-a"}
    )
    assert response.status == 202, await response.text()
    [name] = (await response.json())["ids"]
    assert h.store.objects[name]["spec"]["owner"] == "team-a"


async def test_the_unnamed_tokens_are_the_admin_default(h: Any) -> None:
    _, body, _ = await post(h, A)
    response = await h.client.get(f"/v1/exports/{body['id']}", headers=AUTH)
    assert response.status == 200  # the older single-token form still sees everything
    status, mine, _ = await post(h, AUTH, more={"Idempotency-Key": "legacy"})
    assert status == 202 and h.store.objects[mine["id"]]["spec"]["owner"] == "default"
    from export_operator import resource

    assert mine["id"] == resource.export_name_for_idempotency_key("legacy")


async def test_over_the_rate_is_429_with_retry_after(make_harness: MakeHarness) -> None:
    configs = {
        "slow": PrincipalConfig.model_validate(
            {"tokens": ["token-of-slow-0123"], "ratePerSecond": 0.5, "burst": 2}
        )
    }
    h = await make_harness(principals=configs)
    headers = {"Authorization": "Bearer token-of-slow-0123"}
    assert [(await post(h, headers))[0] for _ in range(2)] == [202, 202]
    status, body, response = await post(h, headers)
    assert (status, body["code"]) == (429, "rate-limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    assert len(h.store.objects) == 2


async def test_over_the_queue_cap_is_429(make_harness: MakeHarness) -> None:
    configs = {
        "small": PrincipalConfig.model_validate({"tokens": ["token-of-small-01"], "maxQueued": 2})
    }
    h = await make_harness(principals=configs)
    headers = {"Authorization": "Bearer token-of-small-01"}
    names = [(await post(h, headers))[1]["id"] for _ in range(2)]
    status, body, response = await post(h, headers)
    assert (status, body["code"]) == (429, "queue-full")
    assert response.headers["Retry-After"]
    h.store.set_status(names[0], {"phase": "Succeeded"})
    assert (await post(h, headers))[0] == 202  # a finished export frees its place


async def test_metrics_count_creations_and_429s_by_principal(make_harness: MakeHarness) -> None:
    """The owner label names configured principals only (a bounded set)."""
    configs = {
        "slow": PrincipalConfig.model_validate(
            {"tokens": ["token-of-slow-0123"], "ratePerSecond": 0.5, "burst": 1}
        ),
        "small": PrincipalConfig.model_validate({"tokens": ["token-of-small-01"], "maxQueued": 1}),
    }
    h = await make_harness(principals=configs)
    slow, small = (
        {"Authorization": "Bearer token-of-slow-0123"},
        {"Authorization": "Bearer token-of-small-01"},
    )
    assert [(await post(h, slow))[0] for _ in range(2)] == [202, 429]
    assert [(await post(h, small))[0] for _ in range(3)] == [202, 429, 429]
    text = await (await h.client.get("/metrics")).text()
    for line in (
        'exportjobs_webhook_exports_created_total{owner="slow",source="api"} 1.0',
        'exportjobs_webhook_exports_created_total{owner="small",source="api"} 1.0',
        'exportjobs_webhook_limited_total{owner="slow",reason="rate-limited"} 1.0',
        'exportjobs_webhook_limited_total{owner="small",reason="queue-full"} 2.0',
    ):
        assert line in text, line


def test_one_credential_given_to_two_principals_is_refused() -> None:
    configs = parse_document(
        '{"a": {"tokens": ["same-token-0123"]}, "b": {"tokens": ["same-token-0123"]}}'
    )
    with pytest.raises(ValueError, match="bearer token"):
        Principals.build(configs)


@pytest.mark.parametrize(
    "text",
    ['{"Bad_Name": {}}', '{"team\\n": {}}', '{"a": {"admin": "yes"}}', '{"a": {"weight": 0}}',
     "[1]", "{",
     '{"a": {"eventPrefixes": ["s3://b/no-slash"]}}', '{"a": {"unknown": 1}}'],
)  # fmt: skip
def test_bad_principal_documents_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="principals"):
        parse_document(text)


def test_principals_from_the_environment(tmp_path: Any) -> None:
    file = tmp_path / "principals"
    file.write_text('{"team-a": {"tokens": ["token-of-team-a-0123"]}}')
    settings = WebhookSettings.from_env(
        {"EXPORTJOBS_WEBHOOK_PRINCIPALS_FILE": str(file), "EXPORTJOBS_WEBHOOK_TOKENS": "old-token"}
    )
    found = settings.principals.for_token("token-of-team-a-0123")
    assert found is not None and found.name == "team-a" and not found.admin
    legacy = settings.principals.for_token("old-token")
    assert legacy is not None and legacy.name == "default" and legacy.admin


async def test_exports_carry_their_submission_order_finer_than_a_second(h: Any) -> None:
    names = [(await post(h, A))[1]["id"] for _ in range(5)]
    stamps = [h.store.objects[n]["metadata"]["annotations"]["exportjobs.dev/submitted-ns"]
              for n in names]  # fmt: skip
    assert all(len(s) == 19 and s.isascii() and s.isdigit() for s in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
