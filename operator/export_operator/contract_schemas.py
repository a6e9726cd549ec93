"""The JSON Schemas of the contract's models: OpenAPI's (`json_schemas`, for /openapi.json) and
the CRD's structural schema of `spec` (`crd_spec_schema`, rendered into charts/exportjobs/crds/;
a test holds the chart's file equal to it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)
from pydantic_core import CoreSchema

from export_operator.models import ExportJobSpec


class _StructuralSchema(GenerateJsonSchema):
    """JSON Schema without `null` for optional fields (they are omitted, never null)."""

    def nullable_schema(self, schema: CoreSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def json_schemas(
    models: list[tuple[type[BaseModel], JsonSchemaMode]],
    *,
    ref_template: str,
    nullable: bool = False,
) -> dict[str, Any]:
    """JSON Schemas (2020-12, as OpenAPI 3.1 reads them) of `models` and what they refer to.

    `nullable=False` (request bodies): optional fields may be left out but are not null.
    """
    _, document = models_json_schema(
        models,
        ref_template=ref_template,
        schema_generator=GenerateJsonSchema if nullable else _StructuralSchema,
    )
    definitions: dict[str, Any] = document.get("$defs", {})
    for schema in definitions.values():
        _tidy(schema)
    return definitions


def _tidy(schema: Any) -> None:
    """Drop pydantic's titles and `default: null` (absent fields have no default)."""
    if isinstance(schema, dict):
        schema.pop("title", None)
        if "default" in schema and schema["default"] is None:
            del schema["default"]
        for value in schema.values():
            _tidy(value)
    elif isinstance(schema, list):
        for item in schema:
            _tidy(item)


_CRD_KEYWORDS = (
    "type",
    "format",
    "description",
    "required",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "properties",
    "x-kubernetes-validations",
)


def crd_spec_schema() -> dict[str, Any]:
    """`ExportJobSpec` as the CRD's structural openAPIV3Schema for `spec`: references inlined,
    keywords in the CRD's order, CEL rules from the models."""
    schema = ExportJobSpec.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_StructuralSchema
    )
    _tidy(schema)
    definitions = schema.pop("$defs", {})
    return _structural(schema, definitions)


def _structural(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, definitions)
    if "enum" in schema and "type" not in schema:
        schema = {**schema, "type": "string"}
    out: dict[str, Any] = {}
    for keyword in _CRD_KEYWORDS:
        if keyword not in schema:
            continue
        value = schema[keyword]
        if keyword == "properties":
            value = {name: _structural(sub, definitions) for name, sub in value.items()}
        out[keyword] = value
    unknown = set(schema) - set(_CRD_KEYWORDS) - {"additionalProperties"}
    if unknown:
        raise ValueError(f"no CRD rendering for JSON Schema keywords {sorted(unknown)}")
    return out
