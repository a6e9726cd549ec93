"""Issue 24: huge integers, Unicode digits, lone surrogates and over-long strings in events and
requests are 4xx problems that create nothing (each once answered 202 or 500)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support import strategies
from tests.support.webhook_harness import AUTH, Harness

EB = {"x-api-key": "eb-key"}


def s3(field: str, value: Any) -> dict[str, Any]:
    return strategies._with_object_field(
        strategies.s3_event("exports-input", "in/a.csv"), field, value
    )


def eb(field: str, value: Any) -> dict[str, Any]:
    event = strategies.eventbridge_event("exports-input", "in/a.csv")
    return strategies._with_object_field(event, field, value)


ISSUE_EVENTS = [
    pytest.param(s3("size", 10**400), AUTH, id="s3-size-400-digits"),
    pytest.param(s3("size", 5 * 1024**4 + 1), AUTH, id="s3-size-over-5TiB"),
    pytest.param(s3("size", "²"), AUTH, id="s3-size-superscript"),
    pytest.param(s3("size", "9" * 5000), AUTH, id="s3-size-5000-digit-string"),
    pytest.param(eb("size", 10**400), EB, id="eb-size-400-digits"),
    pytest.param(eb("size", "²"), EB, id="eb-size-superscript"),
    pytest.param(eb("size", "9" * 5000), EB, id="eb-size-5000-digit-string"),
    pytest.param(s3("sequencer", "\ud800"), AUTH, id="s3-sequencer-surrogate"),
    pytest.param(eb("sequencer", "\ud800"), EB, id="eb-sequencer-surrogate"),
    pytest.param(s3("versionId", 10**400), AUTH, id="s3-version-integer"),
    pytest.param(s3("eTag", "e" * 300), AUTH, id="s3-etag-over-long"),
]


async def assert_refused(harness: Harness, path: str, body: Any, headers: dict[str, str]) -> None:
    before = dict(harness.store.objects)
    response = await harness.client.post(path, json=body, headers=headers)
    text = await response.text()
    assert 400 <= response.status < 500, (response.status, text[:300])
    assert response.content_type == "application/problem+json", text[:300]
    assert harness.store.objects == before


@pytest.mark.parametrize(("event", "headers"), ISSUE_EVENTS)
async def test_the_issues_events_are_4xx_and_create_nothing(
    harness: Harness, event: dict[str, Any], headers: dict[str, str]
) -> None:
    await assert_refused(harness, "/v1/events/s3?format=csv", event, headers)


async def test_a_size_at_the_s3_maximum_is_accepted(harness: Harness) -> None:
    event = strategies.s3_event("exports-input", "in/a.csv", 5 * 1024**4)
    response = await harness.client.post("/v1/events/s3?format=csv", json=event, headers=AUTH)
    assert response.status == 202, await response.text()


async def test_the_limit_and_format_parameters_refuse_unicode_digits(harness: Harness) -> None:
    for path in ("/v1/exports?limit=²", "/v1/exports?limit=" + "9" * 5000):
        response = await harness.client.get(path, headers=AUTH)
        assert response.status == 422, path
    event = strategies.s3_event("exports-input", "in/a.csv")
    await assert_refused(harness, "/v1/events/s3?format=%C2%B2", event, AUTH)


SLOW = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SLOW
@given(event=strategies.HOSTILE_EVENTS)
async def test_hostile_events_are_4xx_and_create_nothing(
    harness: Harness, event: dict[str, Any]
) -> None:
    headers = AUTH if "Records" in event else EB
    await assert_refused(harness, "/v1/events/s3?format=csv", event, headers)


@SLOW
@given(body=strategies.HOSTILE_REQUESTS)
async def test_hostile_requests_are_4xx_and_create_nothing(
    harness: Harness, body: dict[str, Any]
) -> None:
    await assert_refused(harness, "/v1/exports", body, AUTH)
