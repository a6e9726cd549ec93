"""The request and the spec of an export, defined once (pydantic v2).

`ExportRequest` is the body of `POST /v1/exports`; `ExportJobSpec` is an ExportJob's `spec`. The
webhook validates with them, `/openapi.json` is generated from them, and the CRD's spec schema
(charts/exportjobs/crds/) is rendered from `ExportJobSpec` by `crd_spec_schema()`, its CEL rules
included; a test holds the chart's file equal to that rendering, so the copies cannot drift.

Every constraint is written once: a field's JSON Schema keywords (pattern, lengths, bounds) and
its Python check come from the same constants (`export_operator.s3names` for URIs). The few checks
the API server cannot make (a codec lookup, a key's length in UTF-8 bytes) are stricter than the
CRD, never looser: what the webhook accepts, the API server accepts.

Absent and null differ: an optional field may be left out, but `null` is refused (error type
`not-null`), as the CRD refuses it. Validation errors carry a `type` that is a problem code where
one applies (`invalid-s3-uri`, `invalid-s3-key`); the webhook maps the rest by field.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)
from pydantic_core import CoreSchema, PydanticCustomError

from export_operator import s3names
from export_operator.callbacks import MAX_URL_LENGTH, CallbackPolicy, CallbackRefusedError
from export_operator.principals import PRINCIPAL_MAX_LENGTH, PRINCIPAL_PATTERN
from export_operator.resource import ExportFormat
from export_processor.common import CSV_CHAR_PATTERN, is_supported_encoding

ENCODING_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
ENCODING_MAX_LENGTH = 32
DATASET_ID_PATTERN = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
CALLBACK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s]+$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Version ids and ETags: no control characters (they travel in environment variables, which
cannot hold a NUL)."""


def _error(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{reason}", {"reason": message})


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_uri(value: str, *, prefix: bool) -> str:
    try:
        s3names.check_uri(value, prefix=prefix)
    except s3names.S3UriError as exc:
        raise _error("invalid-s3-key" if exc.bad_key else "invalid-s3-uri", str(exc)) from None
    return value


def _object_uri(value: str) -> str:
    return _check_uri(value, prefix=False)


def _prefix_uri(value: str) -> str:
    return _check_uri(value, prefix=True)


_CSV_CHAR = re.compile(CSV_CHAR_PATTERN)
_ENCODING = re.compile(ENCODING_PATTERN)


def _csv_char(value: str) -> str:
    if _CSV_CHAR.fullmatch(value) is None:
        raise _error(
            "invalid-csv-option",
            f"must be one printable ASCII character or a tab, not {value!r}",
        )
    return value


def _encoding(value: str) -> str:
    if (
        len(value) > ENCODING_MAX_LENGTH
        or _ENCODING.fullmatch(value) is None
        or not is_supported_encoding(value)
    ):
        raise _error(
            "invalid-csv-option",
            f"{value!r} is not a supported encoding: an ASCII-compatible text encoding such as "
            "utf-8, utf-8-sig, latin-1 or cp1252 is needed",
        )
    return value


def _dataset_id(value: str) -> str:
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else _raise_uuid(value)
    except ValueError:
        return _raise_uuid(value)


def _raise_uuid(value: str) -> str:
    raise _error("invalid-request", f"must be a UUID, not {value!r}")


def _callback_url(value: Any, info: ValidationInfo) -> Any:
    """The callback policy's static checks (`export_operator.callbacks`); the webhook passes its
    configured policy as validation context `callback_policy`."""
    policy = (info.context or {}).get("callback_policy") or CallbackPolicy()
    try:
        return policy.check_url(value).url
    except CallbackRefusedError as exc:
        raise _error("invalid-callback-url", str(exc)) from None


def _cel(*rules: s3names.Rule) -> list[dict[str, str]]:
    return [{"rule": r.cel, "message": r.message} for r in rules]


ObjectUri = Annotated[
    str,
    Field(
        max_length=s3names.OBJECT_URI_MAX_LENGTH,
        json_schema_extra={
            "pattern": s3names.OBJECT_URI_PATTERN,
            "x-kubernetes-validations": _cel(*s3names.RULES),
        },
    ),
    AfterValidator(_object_uri),
]
PrefixUri = Annotated[
    str,
    Field(
        max_length=s3names.PREFIX_URI_MAX_LENGTH,
        json_schema_extra={
            "pattern": s3names.PREFIX_URI_PATTERN,
            "x-kubernetes-validations": _cel(*s3names.RULES),
        },
    ),
    AfterValidator(_prefix_uri),
]
CsvChar = Annotated[
    str,
    Field(min_length=1, max_length=1, json_schema_extra={"pattern": CSV_CHAR_PATTERN}),
    AfterValidator(_csv_char),
]
Encoding = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ENCODING_MAX_LENGTH,
        json_schema_extra={"pattern": ENCODING_PATTERN},
    ),
    AfterValidator(_encoding),
]
VersionId = Annotated[str, Field(min_length=1, max_length=1024, pattern=PRINTABLE_PATTERN)]
ETag = Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE_PATTERN)]
NotifyUrl = Annotated[
    str, Field(min_length=8, max_length=MAX_URL_LENGTH, pattern=CALLBACK_URL_PATTERN)
]
CallbackUrl = Annotated[NotifyUrl, BeforeValidator(_callback_url)]
PrincipalName = Annotated[
    str, Field(min_length=1, max_length=PRINCIPAL_MAX_LENGTH, pattern=PRINCIPAL_PATTERN)
]
MAX_PARALLELISM = 32
"""The most pods one export may ask for (`parallelism`); the operator caps it further
(EXPORTJOBS_OPERATOR_SPLIT_MAX_PARALLELISM)."""
Parallelism = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=MAX_PARALLELISM,
        description="Run the export as up to this many pods at once, each converting one byte "
        "range of the source, with a result equal to one pod's (docs/api.md, 'Split exports'); "
        "1 = one pod whatever the size. Default: split only sources of at least the operator's "
        "split.minBytes.",
        json_schema_extra={"format": "int32"},
    ),
]
SpecDatasetId = Annotated[str, Field(pattern=DATASET_ID_PATTERN, min_length=36, max_length=36)]


class _Contract(BaseModel):
    """Unknown fields and nulls refused; instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=False)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise _error("not-null", "may be left out, but not null")
        if isinstance(value, str) and not value.isascii() and not _is_unicode(value):
            # JSON's "\ud800" decodes to a lone surrogate: no UTF-8 text (the API server's, an
            # S3 key, a header) can hold it.
            raise _error("invalid-request", "must be valid Unicode (a lone surrogate is not)")
        return value


class CsvOptions(_Contract):
    """How to parse the input CSV."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.delimiter) || !has(self.quote) || "
                    "self.delimiter != self.quote",
                    "message": "spec.csv.delimiter and spec.csv.quote must differ",
                }
            ]
        }
    )

    delimiter: CsvChar = Field(",", description='One character; default ",".')
    header: StrictBool = Field(True, description="Whether the first row names the columns.")
    quote: CsvChar = Field('"', description="One character; default '\"'.")
    encoding: Encoding = Field(
        "utf-8",
        description="The input text encoding, e.g. utf-8, latin-1 (ASCII-compatible).",
    )

    @model_validator(mode="after")
    def _delimiter_is_not_quote(self) -> CsvOptions:
        # Compared with the defaults filled in, as the API server compares after defaulting.
        if self.delimiter == self.quote:
            raise _error("invalid-csv-option", "csv.delimiter and csv.quote must differ")
        return self


class SourceSpec(_Contract):
    """The input CSV object."""

    uri: ObjectUri = Field(description="s3://bucket/key of the input CSV.")
    version_id: VersionId | None = Field(
        None, alias="versionId", description="The S3 object version to read (optional)."
    )
    etag: ETag | None = Field(
        None, description="The expected ETag; the processor refuses another object (optional)."
    )


class DestinationSpec(_Contract):
    """Where to write; default from the operator's configuration."""

    uri: PrefixUri = Field(
        description="s3://bucket/prefix/ (a prefix ending in /, or the bucket root)."
    )


class NotifySpec(_Contract):
    """Where the operator POSTs a signed CloudEvent when the export reaches a final phase
    (docs/notifications.md)."""

    url: NotifyUrl = Field(
        description="The callback URL (https, or http where the operator allows it)."
    )


IMMUTABLE_EXCEPT = ("cancel",)
"""Spec fields that may change after creation."""


def _immutability_rule(aliases: list[str]) -> str:
    parts = [
        f"has(self.{a}) == has(oldSelf.{a}) && (!has(self.{a}) || self.{a} == oldSelf.{a})"
        for a in aliases
        if a not in IMMUTABLE_EXCEPT
    ]
    return " && ".join(parts)


def _spec_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The spec's CEL rules; the immutability rule names every field but `cancel`."""
    aliases = [f.alias or name for name, f in model.model_fields.items()]
    schema["x-kubernetes-validations"] = [
        {
            "rule": "has(self.source) || has(self.datasetId)",
            "message": "one of spec.source or spec.datasetId is required",
        },
        {
            "rule": _immutability_rule(aliases),
            "message": "spec is immutable after creation, except spec.cancel",
        },
        {
            "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
            "message": "spec.cancel cannot be reset to false once set",
        },
    ]


class ExportJobSpec(_Contract):
    """What to export. Immutable after creation, except `cancel`."""

    model_config = ConfigDict(json_schema_extra=_spec_rules)

    source: SourceSpec | None = Field(None, description="The input CSV object.")
    dataset_id: SpecDatasetId | None = Field(
        None,
        alias="datasetId",
        description="A dataset UUID; the webhook resolves it to spec.source.",
    )
    export_format: ExportFormat = Field(alias="format", description="The output format.")
    destination: DestinationSpec | None = Field(
        None, description="Where to write; default from the operator's configuration."
    )
    csv: CsvOptions | None = Field(None, description="How to parse the input CSV.")
    active_deadline_seconds: StrictInt | None = Field(
        None,
        alias="activeDeadlineSeconds",
        ge=10,
        le=86400,
        description="Wall-clock limit for the whole export, all attempts (seconds).",
        json_schema_extra={"format": "int64"},
    )
    backoff_limit: StrictInt | None = Field(
        None,
        alias="backoffLimit",
        ge=0,
        le=10,
        description="Retries of a retryable failure before the export fails.",
        json_schema_extra={"format": "int32"},
    )
    parallelism: Parallelism | None = None
    cancel: StrictBool = Field(
        False, description="Set true to cancel; the Job and its pods are removed."
    )
    notify: NotifySpec | None = Field(
        None,
        description="Where the operator POSTs a signed CloudEvent when the export reaches a "
        "final phase (docs/notifications.md).",
    )
    owner: PrincipalName | None = Field(
        None,
        description="The principal that created the export (set by the webhook; immutable). "
        "Only it, and admins, can read, list, cancel and download it.",
    )

    @model_validator(mode="after")
    def _has_input(self) -> ExportJobSpec:
        if self.source is None and self.dataset_id is None:
            raise _error("invalid-request", "one of spec.source or spec.datasetId is required")
        return self

    def as_body(self) -> dict[str, Any]:
        """The spec as the API server stores it (only the fields given; defaults are its job)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class SourceRequest(_Contract):
    """The input object with an optional version and expected ETag."""

    uri: ObjectUri = Field(description="s3://bucket/key of the input CSV.")
    version_id: VersionId | None = Field(None, description="The S3 object version to read.")
    etag: ETag | None = Field(None, description="Refuse the object unless it has this ETag.")


def _source_shorthand(value: Any) -> Any:
    return {"uri": value} if isinstance(value, str) else value


class ExportRequest(_Contract):
    """The body of `POST /v1/exports`: exactly one of `dataset_id` (resolved through the
    configured template) and `source`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["dataset_id"]}, {"required": ["source"]}]}
    )

    dataset_id: Annotated[str, Field(json_schema_extra={"format": "uuid"})] | None = Field(
        None, description="A dataset UUID, resolved to the source by the configured template."
    )
    source: (
        Annotated[
            SourceRequest,
            BeforeValidator(_source_shorthand, json_schema_input_type=ObjectUri | SourceRequest),
        ]
        | None
    ) = Field(None, description="The input: an s3:// URI, or an object with uri.")
    export_format: ExportFormat = Field(alias="format", description="The output format.")
    destination: PrefixUri | None = Field(
        None, description="s3://bucket/prefix/; default from the webhook's configuration."
    )
    csv: CsvOptions | None = Field(None, description="How to parse the input CSV.")
    parallelism: Parallelism | None = None
    callback_url: CallbackUrl | None = Field(
        None,
        description="Where a signed CloudEvent is POSTed when the export ends (Succeeded, "
        "Failed, Cancelled); https unless the deployment allows http, allowlisted destinations "
        "only (docs/notifications.md).",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _error("invalid-request", "the body must be a JSON object")
        # Present-but-null counts as present (and then fails as null): null is not "absent".
        if ("dataset_id" in data) == ("source" in data):
            raise _error("invalid-request", "give exactly one of dataset_id and source")
        return data

    @field_validator("dataset_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _dataset_id(value)

    def to_spec(
        self,
        *,
        dataset_uri_template: str,
        default_destination: str | None,
        owner: str | None = None,
    ) -> ExportJobSpec:
        """The ExportJob spec this request asks for (the dataset resolved, defaults applied),
        owned by `owner` (a principal's name, validated with the webhook's settings).

        Raises:
            pydantic.ValidationError: when the resolved source or the default destination is not
                a valid spec (a misconfigured template).
        """
        if self.source is not None:
            return self._spec_as_given(default_destination, owner)
        assert self.dataset_id is not None
        # The template makes a new URI: the spec is validated as a whole.
        spec: dict[str, Any] = {
            "format": self.export_format,
            "datasetId": self.dataset_id,
            "source": {"uri": dataset_uri_template.replace("{dataset_id}", self.dataset_id)},
        }
        destination = self.destination or default_destination
        if destination is not None:
            spec["destination"] = {"uri": destination}
        if self.csv is not None:
            spec["csv"] = self.csv
        if self.callback_url is not None:
            spec["notify"] = {"url": self.callback_url}
        if self.parallelism is not None:
            spec["parallelism"] = self.parallelism
        if owner is not None:
            spec["owner"] = owner
        return ExportJobSpec.model_validate(spec)

    def _spec_as_given(self, default_destination: str | None, owner: str | None) -> ExportJobSpec:
        """The spec of a request naming its source: every part was validated by this model
        with the same types the spec uses, so it is assembled without validating again (the
        webhook's hot path); `default_destination` was validated with the settings."""
        assert self.source is not None
        source_fields = {"uri": self.source.uri}
        if self.source.version_id is not None:
            source_fields["version_id"] = self.source.version_id
        if self.source.etag is not None:
            source_fields["etag"] = self.source.etag
        values: dict[str, Any] = {
            "source": SourceSpec.model_construct(set(source_fields), **source_fields),
            "export_format": self.export_format,
        }
        destination = self.destination or default_destination
        if destination is not None:
            values["destination"] = DestinationSpec.model_construct(uri=destination)
        if self.csv is not None:
            values["csv"] = self.csv
        if self.callback_url is not None:
            values["notify"] = NotifySpec.model_construct(url=self.callback_url)
        if self.parallelism is not None:
            values["parallelism"] = self.parallelism
        if owner is not None:
            values["owner"] = owner
        return ExportJobSpec.model_construct(set(values), **values)


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
