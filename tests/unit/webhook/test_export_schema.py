"""The body of an export: what was asked, where it stands and what came of it (three parts) in one
flat object. The model (`schemas.Export`) and /openapi.json (`allOf` the parts with
`unevaluatedProperties: false`, as schemathesis checks the live webhook) accept and refuse the
same bodies."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from export_operator.public_view import api_view, client_view
from export_operator.resource import Phase
from export_operator.webhook.openapi import openapi_document
from export_operator.webhook.schemas import Export

STATUSES = st.fixed_dictionaries(
    {"phase": st.sampled_from([p.value for p in Phase])},
    optional={
        "startTime": st.just("2030-01-01T00:00:00Z"),
        "attempts": st.integers(0, 5),
        "queuePosition": st.integers(1, 10_000),
        "progress": st.fixed_dictionaries(
            {}, optional={"bytesRead": st.integers(0), "rows": st.integers(0)}
        ),
        "error": st.fixed_dictionaries(
            {"code": st.just("S3_REFUSED"), "message": st.text(max_size=20)}
        ),
        "result": st.fixed_dictionaries(
            {"uri": st.just("s3://out/e/data.csv")}, optional={"rows": st.integers(0)}
        ),
        "notification": st.fixed_dictionaries(
            {"state": st.sampled_from(["Pending", "Delivered", "Failed"])}
        ),
    },
)
OBJECT = {
    "metadata": {"name": "e", "creationTimestamp": "2030-01-01T00:00:00Z"},
    "spec": {"source": {"uri": "s3://in/a.csv"}, "format": "csv", "owner": "team-a"},
}


def accepted_by(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the model and the document's `Export` schema accept `body` (every part, no key
    of none)."""
    try:
        Export.model_validate(body)
        model = True
    except ValidationError:
        model = False
    schema = {"$ref": "#/components/schemas/Export", "components": openapi_document()["components"]}
    return model, jsonschema_rs.Draft202012Validator(schema).is_valid(body)


def test_the_document_describes_an_export_as_its_three_parts() -> None:
    schemas = openapi_document()["components"]["schemas"]
    parts = ["ExportAsked", "ExportState", "ExportOutcome"]
    assert schemas["Export"]["allOf"] == [{"$ref": f"#/components/schemas/{p}"} for p in parts]
    assert schemas["Export"]["unevaluatedProperties"] is False
    keys = [set(schemas[p]["properties"]) for p in parts]
    assert set.union(*keys) == set(api_view(OBJECT)) and sum(map(len, keys)) == len(
        api_view(OBJECT)
    )
    assert not any("additionalProperties" in schemas[p] for p in parts)  # allOf would refuse all


@settings(deadline=None, max_examples=50)
@given(STATUSES, st.booleans())
def test_every_view_the_webhook_builds_is_an_export(status: dict[str, Any], callback: bool) -> None:
    notify = {"notify": {"url": "https://hooks.example.com/done"}} if callback else {}
    obj = {**OBJECT, "spec": {**OBJECT["spec"], **notify}, "status": status}
    assert accepted_by(api_view(obj, download_url="https://s3/x")) == (True, True)
    assert accepted_by(client_view(obj)) == (True, True)  # the callback's data: no notification


@pytest.mark.parametrize(
    "change",
    [
        {"unknown": 1},  # a key of no part
        {"status": "Lost"},  # not a phase
        {"cancel_requested": None},
        {"progress": "half"},
        {"result": {"bytes": 3}},  # no uri
    ],
)
def test_a_body_off_the_schema_is_refused_by_both(change: dict[str, Any]) -> None:
    assert accepted_by({**api_view(OBJECT), **change}) == (False, False)


@pytest.mark.parametrize("key", ["id", "status", "error"])
def test_a_body_without_a_key_of_a_part_is_refused_by_both(key: str) -> None:
    body = api_view(OBJECT)
    del body[key]
    assert accepted_by(body) == (False, False)
