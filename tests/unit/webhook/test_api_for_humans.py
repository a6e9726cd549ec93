"""What a person reading the API needs: the callback's state, uncached presigned URLs, and a
`Location` that works behind an Ingress with a path prefix."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from export_operator.webhook.listing import (
    ListQuery,
    QueryError,
    decode_continue,
    encode_continue,
)
from export_operator.webhook.schemas import Export
from export_operator.webhook.settings import WebhookSettings
from tests.support.webhook_harness import AUTH, Harness, MakeHarness

SOURCE = "s3://exports-input/data/a.csv"


async def _post(h: Harness, **extra: Any) -> tuple[str, Any]:
    response = await h.client.post(
        "/v1/exports",
        json={"source": SOURCE, "format": "csv", "destination": "s3://exports-output/x/", **extra},
        headers=AUTH,
    )
    assert response.status == 202
    return (await response.json())["id"], response


async def _get(h: Harness, name: str) -> Any:
    return await h.client.get(f"/v1/exports/{name}", headers=AUTH)


async def test_get_shows_the_callback_delivery_state(harness: Harness) -> None:
    h = harness
    name, _ = await _post(h, callback_url="https://hooks.example.com/done")
    view = await (await _get(h, name)).json()
    assert view["notification"]["state"] == "Pending"
    h.store.set_status(
        name,
        {
            "phase": "Failed",
            "notification": {
                "state": "Delivered",
                "attempts": 2,
                "lastStatusCode": 204,
                "deliveredTime": "2030-01-01T00:00:00Z",
            },
        },
    )
    view = await (await _get(h, name)).json()
    assert view["notification"] == {
        "state": "Delivered",
        "attempts": 2,
        "last_status_code": 204,
        "last_attempt_time": None,
        "delivered_time": "2030-01-01T00:00:00Z",
        "last_error": None,
    }
    Export.model_validate(view)
    listed = await (await h.client.get("/v1/exports", headers=AUTH)).json()
    assert listed["items"][0]["notification"]["state"] == "Delivered"
    # Without a callback: null.
    other, _ = await _post(h, format="jsonl")
    assert (await (await _get(h, other)).json())["notification"] is None


async def test_a_body_with_a_presigned_url_is_never_cached(harness: Harness) -> None:
    name, _ = await _post(harness)
    assert "Cache-Control" not in (await _get(harness, name)).headers
    harness.store.set_status(
        name,
        {"phase": "Succeeded", "result": {"uri": f"s3://exports-output/x/{name}/data.csv"}},
    )
    response = await _get(harness, name)
    assert (await response.json())["result"]["download_url"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("public_url", "prefix"),
    [
        ("", ""),
        ("/exports", "/exports"),
        ("https://api.example.com/exports/", "https://api.example.com/exports"),
    ],
)
async def test_location_carries_the_public_url(
    make_harness: MakeHarness, public_url: str, prefix: str
) -> None:
    h = await make_harness(public_url=public_url.rstrip("/"))
    name, response = await _post(h)
    assert response.headers["Location"] == f"{prefix}/v1/exports/{name}"
    cancel = await h.client.delete(f"/v1/exports/{name}", headers=AUTH)
    assert cancel.headers["Location"] == f"{prefix}/v1/exports/{name}"


def test_the_public_url_setting_is_read_and_checked() -> None:
    env = {
        "EXPORTJOBS_WEBHOOK_TOKENS": "a-token-of-sixteen",
        "EXPORTJOBS_WEBHOOK_PUBLIC_URL": "/p/",
    }
    assert WebhookSettings.from_env(env).http.public_url == "/p"
    for bad in ("exports", "ftp://x/", "https://h/a b", "/a?b"):
        with pytest.raises(ValueError, match="public URL"):
            WebhookSettings.from_env({**env, "EXPORTJOBS_WEBHOOK_PUBLIC_URL": bad})


@settings(deadline=None)
@given(st.text(max_size=40))
@example("\n")  # `$` matched before a final newline: "\n" was taken as a URL
@example("/exports\n")
def test_any_public_url_is_accepted_as_a_prefix_or_refused(text: str) -> None:
    env = {"EXPORTJOBS_WEBHOOK_TOKENS": "a-token-of-sixteen", "EXPORTJOBS_WEBHOOK_PUBLIC_URL": text}
    try:
        url = WebhookSettings.from_env(env).http.public_url
    except ValueError:
        return
    assert url == "" or url.startswith(("/", "http://", "https://"))
    assert not any(c.isspace() for c in url) and "?" not in url and "#" not in url


async def _list(h: Harness, **params: str) -> Any:
    response = await h.client.get("/v1/exports", params=params, headers=AUTH)
    return response.status, await response.json()


async def test_the_list_is_newest_first_and_filters_by_source_and_creation(
    harness: Harness,
) -> None:
    h = harness
    ids = []
    for key in ("a/1.csv", "b/2.csv", "a/3.csv"):
        response = await h.client.post(
            "/v1/exports",
            json={"source": f"s3://exports-input/{key}", "format": "csv"},
            headers=AUTH,
        )
        ids.append((await response.json())["id"])
    _, body = await _list(h)
    assert [i["id"] for i in body["items"]] == ids[::-1]
    _, body = await _list(h, source_prefix="s3://exports-input/a/")
    assert [i["id"] for i in body["items"]] == [ids[2], ids[0]]
    # created_since: everything from the second one's creation time on
    since = h.store.objects[ids[1]]["metadata"]["creationTimestamp"]
    _, body = await _list(h, created_since=since)
    assert [i["id"] for i in body["items"]] == [ids[2], ids[1]]
    _, body = await _list(h, created_since="2999-01-01T00:00:00Z")
    assert body == {"items": [], "continue": None}


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"source_prefix": "exports-input/"}, "source_prefix"),
        ({"created_since": "yesterday"}, "created_since"),
        ({"created_since": "2026-11-01T00:00:00"}, "created_since"),  # no zone
        ({"continue": "bm90LWEtdG9rZW4"}, "continue"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_list_queries_are_422_naming_the_parameter(
    harness: Harness, params: dict[str, str], complaint: str
) -> None:
    status, body = await _list(harness, **params)
    assert status == 422 and complaint in body["detail"]


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["phase", "limit", "source_prefix", "created_since", "continue"]),
        st.text(max_size=30),
        max_size=5,
    )
)
def test_any_list_query_parses_or_is_refused(query: dict[str, str]) -> None:
    try:
        parsed = ListQuery.parse(query, default_limit=100)
    except QueryError:
        return
    assert 1 <= parsed.limit <= 500
    if parsed.after is not None:
        assert decode_continue(encode_continue(parsed.after)) == parsed.after


async def test_the_longest_source_prefix_percent_encoded_is_answered_by_the_webhook(
    harness: Harness,
) -> None:
    """2,048 characters of 'Ñ' are a 24 KiB request line percent-encoded: aiohttp's own limit
    (8,190) answered it in plain text (schemathesis: an undocumented status); now the webhook
    answers it, and one byte over its 32 KiB limit is still aiohttp's 400, never a 5xx."""
    status, body = await _list(harness, source_prefix="s3://" + "Ñ" * 2043)
    assert status == 200 and body == {"items": [], "continue": None}
    status, body = await _list(harness, source_prefix="s3://" + "Ñ" * 2044)
    assert status == 422 and "source_prefix" in body["detail"]
    too_long = await harness.client.get("/v1/exports?x=" + "a" * 32_800, headers=AUTH)
    assert too_long.status == 400
