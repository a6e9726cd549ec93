"""`callback_url` on POST /v1/exports and the callback rules of S3-triggered exports: stored as
`spec.notify.url`, shown by GET, refused with 422 where the policy never allows it."""

from __future__ import annotations

from typing import Any

import pytest

from export_operator.callbacks import CallbackPolicy
from export_operator.webhook.settings import WebhookSettings, parse_callback_rules
from tests.support import samples
from tests.support.webhook_harness import AUTH, Harness, MakeHarness

SOURCE = "s3://exports-input/data/a.csv"
HOOK = "https://hooks.example.com/exports?team=7"


async def post(h: Harness, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await h.client.post("/v1/exports", json=body, headers={**AUTH, **(headers or {})})


async def test_callback_url_is_stored_and_shown(harness: Harness) -> None:
    response = await post(harness, {"source": SOURCE, "format": "csv", "callback_url": HOOK})
    assert response.status == 202
    name = (await response.json())["id"]
    assert harness.store.objects[name]["spec"]["notify"] == {"url": HOOK}
    got = await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
    assert (await got.json())["callback_url"] == HOOK


async def test_without_callback_url_there_is_no_notify(harness: Harness) -> None:
    response = await post(harness, {"source": SOURCE, "format": "csv"})
    name = (await response.json())["id"]
    assert "notify" not in harness.store.objects[name]["spec"]
    got = await harness.client.get(f"/v1/exports/{name}", headers=AUTH)
    assert (await got.json())["callback_url"] is None


async def test_idempotency_key_tells_callback_urls_apart(harness: Harness) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = await post(harness, {"source": SOURCE, "format": "csv", "callback_url": HOOK}, key)
    assert first.status == 202
    again = await post(harness, {"source": SOURCE, "format": "csv", "callback_url": HOOK}, key)
    assert again.status == 202
    other = {"source": SOURCE, "format": "csv", "callback_url": HOOK + "&x=1"}
    conflict = await post(harness, other, key)
    assert conflict.status == 422


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://127.0.0.1:8443/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.1.2.3/x", "private"),
        ("https://192.168.0.1/x", "private"),
        ("https://0.0.0.0/x", "private"),
        ("https://224.0.0.1/x", "private"),
        ("ftp://hooks.example.com/x", "http(s)"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https:///x", "no host"),
        ("https://hooks example.com/x", "spaces"),
        ("https://h\u00f6oks.example.com/x", "non-ASCII"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
        ("https://" + "a" * 2050 + ".com/", "longer than"),
        (42, "http(s) URL"),
        (None, "not null"),
    ],
)
async def test_disallowed_callback_urls_get_422(harness: Harness, url: Any, why: str) -> None:
    response = await post(harness, {"source": SOURCE, "format": "csv", "callback_url": url})
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "invalid-callback-url"
    assert why in problem["detail"]
    assert harness.store.create_calls == 0


async def test_allowlisted_network_and_http_when_allowed(make_harness: MakeHarness) -> None:
    policy = CallbackPolicy.parse("127.0.0.0/8", allow_http=True)
    h = await make_harness(callback_policy=policy)
    url = "http://127.0.0.1:8080/hook"
    response = await post(h, {"source": SOURCE, "format": "csv", "callback_url": url})
    assert response.status == 202


async def test_host_allowlist_refuses_other_hosts(make_harness: MakeHarness) -> None:
    h = await make_harness(callback_policy=CallbackPolicy.parse("*.example.com"))
    ok = await post(h, {"source": SOURCE, "format": "csv", "callback_url": HOOK})
    assert ok.status == 202
    refused = await post(
        h, {"source": SOURCE, "format": "csv", "callback_url": "https://evil.example.org/x"}
    )
    assert refused.status == 422
    assert "allowlist" in (await refused.json())["detail"]


async def test_s3_events_get_the_callback_of_the_longest_matching_rule(
    make_harness: MakeHarness,
) -> None:
    rules = parse_callback_rules(
        "in-bucket=https://a.example.com/h,in-bucket/reports/=https://b.example.com/h?x=1"
    )
    h = await make_harness(callback_rules=rules)
    urls = {}
    for key in ("top.csv", "reports/q1.csv"):
        response = await h.client.post(
            "/v1/events/s3?format=csv",
            json=samples.s3_event(bucket="in-bucket", key=key),
            headers=AUTH,
        )
        assert response.status == 202
        name = (await response.json())["ids"][0]
        urls[key] = h.store.objects[name]["spec"]["notify"]["url"]
    assert urls == {
        "top.csv": "https://a.example.com/h",
        "reports/q1.csv": "https://b.example.com/h?x=1",
    }
    other = await h.client.post(
        "/v1/events/s3?format=csv", json=samples.s3_event(bucket="elsewhere"), headers=AUTH
    )
    assert "notify" not in h.store.objects[(await other.json())["ids"][0]]["spec"]


def test_callback_rules_from_env_are_checked_against_the_policy() -> None:
    env = {"EXPORTJOBS_WEBHOOK_CALLBACK_RULES": "b=http://hooks.example.com/x"}
    with pytest.raises(ValueError, match="https"):
        WebhookSettings.from_env(env)
    env["EXPORTJOBS_CALLBACK_ALLOW_HTTP"] = "true"
    settings = WebhookSettings.from_env(env)
    assert settings.callback_for(bucket="b", key="k") == "http://hooks.example.com/x"
    with pytest.raises(ValueError, match="bucket"):
        WebhookSettings.from_env({"EXPORTJOBS_WEBHOOK_CALLBACK_RULES": "no-equals-sign"})
