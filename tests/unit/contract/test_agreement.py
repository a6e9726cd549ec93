"""What the webhook accepts, the spec model, the CRD's checks and the processor's settings parser
accept too (hypothesis); the grammar's Python checks equal its patterns; the two lists of error
codes agree. The API-server side runs in tests/cluster/test_contract_api_server.py."""

from __future__ import annotations

import encodings.aliases
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_operator import contract_schemas, field_types, models, resource, s3names
from export_operator.controller.jobs import processor_env, resolve_inputs
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView
from export_operator.webhook.events import EventError, EventSource, parse_event
from export_operator.webhook.exports import build_export_job, parse_export_request, spec_for_event
from export_operator.webhook.problems import Problem, ProblemCode
from export_processor import common
from export_processor import settings as processor_settings
from export_processor.locations import parse_location
from tests.support import strategies

pytestmark = pytest.mark.unit

OPERATOR = OperatorSettings.from_env({}, default_destination_uri="s3://exports-output/out/")
CRD_SPEC = contract_schemas.crd_spec_schema()


_TYPES = {"object": dict, "string": str, "boolean": bool, "integer": int}


def structural_errors(value: Any, schema: dict[str, Any], path: str = "spec") -> list[str]:
    """The CRD schema keywords this CRD uses, checked as the API server checks them (unknown
    fields would be pruned, so they are errors here: the webhook must not send any)."""
    if not isinstance(value, _TYPES[schema["type"]]) or (
        schema["type"] == "integer" and isinstance(value, bool)
    ):
        return [f"{path}: not {schema['type']}"]
    errors = []
    if isinstance(value, str):
        if re.search(schema.get("pattern", ""), value) is None:
            errors.append(f"{path}: pattern")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30):
            errors.append(f"{path}: length")
        for rule in schema.get("x-kubernetes-validations", []):
            regex = re.fullmatch(r"(!?)self\.matches\(r'(.*)'\)", rule["rule"])
            if regex and (re.search(regex[2], value) is None) != (regex[1] == "!"):
                errors.append(f"{path}: {rule['message']}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: enum")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        errors.append(f"{path}: bounds")
    if isinstance(value, dict):
        errors += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key not in schema.get("properties", {}):
                errors.append(f"{path}.{key}: unknown")
            else:
                errors += structural_errors(item, schema["properties"][key], f"{path}.{key}")
    return errors


def crd_accepts(spec: dict[str, Any]) -> None:
    """The CRD's structural checks and its `matches` CEL rules, evaluated in Python."""
    assert structural_errors(spec, CRD_SPEC) == []
    csv = spec.get("csv", {})
    assert csv.get("delimiter", ",") != csv.get("quote", '"')


def processor_accepts(body: dict[str, Any]) -> None:
    view = ExportView.from_body(
        {**body, "metadata": {**body["metadata"], "uid": "u", "generation": 1}}
    )
    env = {e["name"]: e["value"] for e in processor_env(
        export=view, inputs=resolve_inputs(export=view, settings=OPERATOR), settings=OPERATOR
    )}  # fmt: skip
    parsed = processor_settings.ProcessorSettings.from_env(env)
    parse_location(parsed.source_uri, prefix=False)
    parse_location(parsed.destination_uri, prefix=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.REQUESTS)
def test_an_accepted_request_is_a_valid_spec_for_the_crd_and_the_processor(
    body: dict[str, Any],
) -> None:
    try:
        spec = parse_export_request(
            body, dataset_uri_template="s3://datasets/{dataset_id}.csv", default_destination=None
        )
    except Problem as problem:
        assert problem.status == 422 and problem.code in ProblemCode and problem.detail
        return
    job = build_export_job(name="api-x", namespace="ns", spec=spec, source_kind=EventSource.API)
    assert models.ExportJobSpec.model_validate(job["spec"]) == spec
    crd_accepts(job["spec"])
    processor_accepts(job)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.EVENTS)
def test_an_accepted_event_is_a_valid_spec_for_the_crd_and_the_processor(
    event: dict[str, Any],
) -> None:
    try:
        parsed = parse_event(event, source=EventSource.S3)
    except EventError as exc:
        assert str(exc)
        return
    for record in parsed.records:
        spec = spec_for_event(
            record, export_format=resource.ExportFormat.CSV, default_destination=None
        )
        job = build_export_job(name="s3-x", namespace="ns", spec=spec, source_kind=parsed.source)
        crd_accepts(job["spec"])
        processor_accepts(job)
        assert "\ufffd" not in record.location.key or "%EF%BF%BD" in str(event).upper()


@settings(deadline=None)
@given(st.characters())
def test_csv_characters_agree_with_the_pattern_and_the_processor(char: str) -> None:
    by_pattern = re.fullmatch(field_types.CSV_CHAR_PATTERN, char) is not None
    try:
        models.CsvOptions.model_validate({"delimiter": char, "quote": "'"})
        by_model = True
    except ValueError:
        by_model = char == "'"  # refused only as equal to the quote
    assert by_model == by_pattern == common.is_csv_char(char)


@pytest.mark.parametrize("char", ["\n", "\r", "✓", "😀", "\x00", "\x7f", ""])
def test_bad_csv_characters_are_refused_by_model_and_processor(char: str) -> None:
    with pytest.raises(ValueError):
        models.CsvOptions.model_validate({"delimiter": char})
    with pytest.raises(ValueError):
        models.CsvOptions.model_validate({"quote": char})
    assert not common.is_csv_char(char)


@settings(max_examples=300, deadline=None)  # a codec's first lookup imports its module
@given(st.one_of(st.sampled_from(sorted(set(encodings.aliases.aliases))), st.text(max_size=10)))
def test_encodings_the_model_accepts_pass_the_pattern_and_the_codec_check(name: str) -> None:
    model = common.is_supported_encoding(name)
    try:
        models.CsvOptions.model_validate({"encoding": name})
        accepted = True
    except ValueError:
        accepted = False
    if accepted:
        assert model and re.fullmatch(field_types.ENCODING_PATTERN, name) and len(name) <= 32


@settings(max_examples=500, deadline=None)
@given(st.one_of(strategies.OBJECT_URIS, strategies.PREFIX_URIS, st.text(max_size=30)))
def test_uri_checks_are_the_crd_pattern_and_rules(uri: str) -> None:
    for prefix, pattern in (
        (False, s3names.OBJECT_URI_PATTERN),
        (True, s3names.PREFIX_URI_PATTERN),
    ):
        try:
            s3names.check_uri(uri, prefix=prefix)
            accepted = True
        except s3names.S3UriError:
            accepted = False
        by_crd = re.fullmatch(pattern, uri) is not None and all(r.holds(uri) for r in s3names.RULES)
        key_bytes = len(uri.partition("://")[2].partition("/")[2].encode())
        assert accepted == (by_crd and key_bytes <= s3names.MAX_KEY_BYTES), (uri, prefix)
