"""What the webhook accepts, the real API server accepts (hypothesis, server-side dry runs); the
cases issue 12 found are refused by the API server too, with the models' messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client as k8s

from export_operator import resource
from export_operator.webhook.events import EventError, EventSource, parse_event
from export_operator.webhook.exports import build_export_job, parse_export_request, spec_for_event
from export_operator.webhook.problems import Problem
from tests.support import strategies

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def dry_run_create(api: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL, body, dry_run="All"
    )


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURES)
@given(body=strategies.REQUESTS)
def test_every_request_the_webhook_accepts_the_api_server_accepts(
    kube_api: k8s.ApiClient, crd: str, namespace: str, body: dict[str, Any]
) -> None:
    try:
        spec = parse_export_request(
            body, dataset_uri_template="s3://datasets/{dataset_id}.csv", default_destination=None
        )
    except Problem:
        return
    job = build_export_job(
        name="api-x", namespace=namespace, spec=spec, source_kind=EventSource.API
    )
    dry_run_create(kube_api, namespace, job)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(event=strategies.EVENTS)
def test_every_event_the_webhook_accepts_the_api_server_accepts(
    kube_api: k8s.ApiClient, crd: str, namespace: str, event: dict[str, Any]
) -> None:
    try:
        parsed = parse_event(event, source=EventSource.S3)
    except EventError:
        return
    for record in parsed.records:
        spec = spec_for_event(
            record, export_format=resource.ExportFormat.CSV, default_destination=None
        )
        job = build_export_job(
            name="s3-x", namespace=namespace, spec=spec, source_kind=parsed.source
        )
        dry_run_create(kube_api, namespace, job)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"source": {"uri": "s3://192.168.1.1/a.csv"}}, "IP address"),
        ({"source": {"uri": "s3://my.-bucket/a.csv"}}, "bucket name"),
        ({"source": {"uri": "s3://exports-input/a/../b.csv"}}, "'..' segments"),
        ({"source": {"uri": "s3://exports-input/a//b.csv"}}, "empty segments"),
        ({"destination": {"uri": "s3://exports-output/x/../"}}, "'..' segments"),
        ({"csv": {"delimiter": "\n"}}, "spec.csv.delimiter"),
        ({"csv": {"delimiter": "✓"}}, "spec.csv.delimiter"),
        ({"csv": {"delimiter": "\u0000"}}, "spec.csv.delimiter"),
        ({"csv": {"quote": "\n"}}, "spec.csv.quote"),
        ({"csv": {"delimiter": '"'}}, "must differ"),
        ({"source": {"uri": "s3://exports-input/a.csv", "versionId": "v\u0000"}}, "versionId"),
    ],
)
def test_the_api_server_refuses_what_the_webhook_refuses(
    kube_api: k8s.ApiClient, crd: str, namespace: str, spec: dict[str, Any], words: str
) -> None:
    body = {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": "bad"},
        "spec": {"source": {"uri": "s3://exports-input/a.csv"}, "format": "csv", **spec},
    }
    with pytest.raises(k8s.ApiException) as refused:
        dry_run_create(kube_api, namespace, body)
    assert refused.value.status == 422
    assert words in json.loads(refused.value.body)["message"]
