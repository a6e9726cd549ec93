"""The API server itself refuses invalid ExportJobs, with a message that says why (CRD schema and
CEL rules), and refuses changing the spec after creation except `spec.cancel`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s

from export_operator import resource

VALID_SPEC: dict[str, Any] = {
    "source": {"uri": "s3://exports-input/in/a.csv"},
    "format": "parquet",
    "destination": {"uri": "s3://exports-output/out/"},
}


def _create(api: k8s.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        resource.GROUP,
        resource.VERSION,
        namespace,
        resource.PLURAL,
        {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def _refusal(api: k8s.ApiClient, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(k8s.ApiException) as refused:
        _create(api, namespace, "bad", spec)
    assert refused.value.status == 422
    return str(json.loads(refused.value.body)["message"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "xlsx"}, 'Unsupported value: "xlsx"'),
        ({"source": None}, "one of spec.source or spec.datasetId is required"),
        ({"source": {"uri": "http://example.com/a.csv"}}, "spec.source.uri"),
        ({"source": {"uri": "s3://Bad_Bucket/a.csv"}}, "spec.source.uri"),
        ({"destination": {"uri": "s3://exports-output/no-trailing-slash"}}, "spec.destination.uri"),
        ({"datasetId": "not-a-uuid"}, "spec.datasetId"),
        ({"activeDeadlineSeconds": 5}, "spec.activeDeadlineSeconds"),
        ({"backoffLimit": 11}, "spec.backoffLimit"),
        ({"csv": {"delimiter": ";;"}}, "spec.csv.delimiter"),
        ({"notify": {"url": "ftp://example.com/hook"}}, "spec.notify.url"),
        ({"notify": {}}, "spec.notify.url"),
        (
            {"csv": {"delimiter": '"', "quote": '"'}},
            "spec.csv.delimiter and spec.csv.quote must differ",
        ),
    ],
)
def test_invalid_specs_are_refused_with_a_reason(
    kube_api: k8s.ApiClient, crd: str, namespace: str, change: dict[str, Any], expected: str
) -> None:
    spec = {k: v for k, v in {**VALID_SPEC, **change}.items() if v is not None}
    assert expected in _refusal(kube_api, namespace, spec)


def test_spec_is_immutable_except_cancel(kube_api: k8s.ApiClient, crd: str, namespace: str) -> None:
    _create(kube_api, namespace, "ok", VALID_SPEC)
    custom = k8s.CustomObjectsApi(kube_api)

    def patch(spec: dict[str, Any]) -> Any:
        return custom.patch_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, "ok", {"spec": spec}
        )

    with pytest.raises(k8s.ApiException) as refused:
        patch({"format": "csv"})
    assert refused.value.status == 422
    assert "immutable" in json.loads(refused.value.body)["message"]
    assert patch({"cancel": True})["spec"]["cancel"] is True


def test_notify_url_is_immutable(kube_api: k8s.ApiClient, crd: str, namespace: str) -> None:
    _create(kube_api, namespace, "ok", {**VALID_SPEC, "notify": {"url": "https://a.example/h"}})
    custom = k8s.CustomObjectsApi(kube_api)
    for spec in ({"notify": {"url": "https://b.example/h"}}, {"notify": None}):
        with pytest.raises(k8s.ApiException) as refused:
            custom.patch_namespaced_custom_object(
                resource.GROUP, resource.VERSION, namespace, resource.PLURAL, "ok", {"spec": spec}
            )
        assert refused.value.status == 422
        assert "immutable" in json.loads(refused.value.body)["message"]
