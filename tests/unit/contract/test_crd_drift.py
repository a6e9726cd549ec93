"""The CRD's `spec` schema and CEL rules are the models' (export_operator.models), field by field.

The CRD file is rendered from the models by hack/crd_spec.py; this test fails, naming every field
that differs, when one of them changed without the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from export_operator import contract_schemas, field_types, models, s3names
from export_operator.models import ExportJobSpec

pytestmark = pytest.mark.unit

CRD_FILE = (
    Path(__file__).resolve().parents[3] / "charts/exportjobs/crds/exportjobs.dev_exportjobs.yaml"
)


def crd_spec() -> dict[str, Any]:
    document = yaml.safe_load(CRD_FILE.read_text())
    version = document["spec"]["versions"][0]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def differences(crd: Any, model: Any, path: str = "spec") -> Iterator[str]:
    """Every keyword of every field where the two schemas disagree."""
    if isinstance(crd, dict) and isinstance(model, dict):
        for key in sorted(set(crd) | set(model)):
            where = f"{path}.{key}"
            if key not in crd:
                yield f"{where}: only in the models ({model[key]!r})"
            elif key not in model:
                yield f"{where}: only in the CRD ({crd[key]!r})"
            else:
                yield from differences(crd[key], model[key], where)
    elif isinstance(crd, list) and isinstance(model, list) and len(crd) == len(model):
        for index, (a, b) in enumerate(zip(crd, model, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif crd != model:
        yield f"{path}: CRD {crd!r} != models {model!r}"


def test_crd_spec_schema_is_rendered_from_the_models() -> None:
    found = list(differences(crd_spec(), contract_schemas.crd_spec_schema()))
    assert not found, "run `.venv/bin/python hack/crd_spec.py`; differing:\n" + "\n".join(found)


def _aliases(model: type[Any]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_spec_field_is_a_crd_property_and_back() -> None:
    spec = crd_spec()
    assert set(spec["properties"]) == _aliases(ExportJobSpec)
    for name, model in (
        ("source", models.SourceSpec),
        ("destination", models.DestinationSpec),
        ("csv", models.CsvOptions),
    ):
        assert set(spec["properties"][name]["properties"]) == _aliases(model), name
    required = {f.alias or n for n, f in ExportJobSpec.model_fields.items() if f.is_required()}
    assert set(spec["required"]) == required


def test_cel_rules_of_the_crd_are_the_models_rules() -> None:
    spec = crd_spec()
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    assert "has(self.source) || has(self.datasetId)" in rules
    immutable = next(r for r in rules if "oldSelf.format" in r)
    for alias in _aliases(ExportJobSpec) - {"cancel"}:
        assert f"self.{alias} == oldSelf.{alias}" in immutable, alias
    for uri in (spec["properties"]["source"], spec["properties"]["destination"]):
        cel = [r["rule"] for r in uri["properties"]["uri"]["x-kubernetes-validations"]]
        assert cel == [rule.cel for rule in s3names.RULES]
    csv_rules = [r["rule"] for r in spec["properties"]["csv"]["x-kubernetes-validations"]]
    assert csv_rules == ["!has(self.delimiter) || !has(self.quote) || self.delimiter != self.quote"]


def test_patterns_are_read_alike_by_python_and_re2() -> None:
    """Only the shared regular-expression subset: no lookaround, backreferences or \\Z."""
    patterns = [
        s3names.OBJECT_URI_PATTERN,
        s3names.PREFIX_URI_PATTERN,
        field_types.CSV_CHAR_PATTERN,
    ]
    patterns += [
        field_types.ENCODING_PATTERN,
        field_types.DATASET_ID_PATTERN,
        field_types.PRINTABLE_PATTERN,
    ]
    patterns += [rule.regex for rule in s3names.RULES]
    for pattern in patterns:
        re.compile(pattern)
        assert not re.search(r"\(\?[=!<]|\\[1-9]|\\Z|\\A", pattern), pattern
