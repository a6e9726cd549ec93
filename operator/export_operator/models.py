"""The request and the spec of an export, defined once (pydantic v2).

`ExportRequest` is the body of `POST /v1/exports`; `ExportJobSpec` is an ExportJob's `spec`. The
webhook validates with them, `/openapi.json` is generated from them, and the CRD's spec schema
(charts/exportjobs/crds/) is rendered from `ExportJobSpec` by `contract_schemas.crd_spec_schema()`,
its CEL rules included; a test holds the chart's file equal to that rendering, so the copies
cannot drift.

Every constraint is written once, in field_types.py: a field's JSON Schema keywords (pattern,
lengths, bounds) and its Python check come from the same constants. The few checks
the API server cannot make (a codec lookup, a key's length in UTF-8 bytes) are stricter than the
CRD, never looser: what the webhook accepts, the API server accepts.

Absent and null differ: an optional field may be left out, but `null` is refused (error type
`not-null`), as the CRD refuses it. Validation errors carry a `type` that is a problem code where
one applies (`invalid-s3-uri`, `invalid-s3-key`); the webhook maps the rest by field.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from export_operator.field_types import (
    CallbackUrl,
    CsvChar,
    Encoding,
    ETag,
    NotifyUrl,
    ObjectUri,
    Parallelism,
    PrefixUri,
    PrincipalName,
    SpecDatasetId,
    VersionId,
    dataset_id,
    is_unicode,
    refusal,
)
from export_operator.resource import ExportFormat

_Model = TypeVar("_Model", bound=BaseModel)
_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {}


def trusted(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """`cls.model_construct(set(values), **values)` for the webhook's hot path: the same instance
    (fields in the model's order, the absent ones at their defaults, the given ones as the fields
    set) without model_construct's alias search per field, which cost more than validating the
    request (docs/benchmarks.md, "Webhook"). `values` are keyed by field name and validated
    already; for models with constant defaults, no post-init and no extra fields
    (tests/unit/test_models.py holds it equal to model_construct)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        assert not cls.__pydantic_post_init__ and cls.model_config.get("extra") != "allow"
        assert not any(f.default_factory for f in cls.model_fields.values())
        defaults = {n: f.default for n, f in cls.model_fields.items() if not f.is_required()}
        _DEFAULTS[cls] = defaults
    fields = {
        n: values[n] if n in values else defaults[n]
        for n in cls.model_fields
        if n in values or n in defaults
    }
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class _Contract(BaseModel):
    """Unknown fields and nulls refused; instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=False)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise refusal("not-null", "may be left out, but not null")
        if isinstance(value, str) and not value.isascii() and not is_unicode(value):
            # JSON's "\ud800" decodes to a lone surrogate: no UTF-8 text (the API server's, an
            # S3 key, a header) can hold it.
            raise refusal("invalid-request", "must be valid Unicode (a lone surrogate is not)")
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
            raise refusal("invalid-csv-option", "csv.delimiter and csv.quote must differ")
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
            raise refusal("invalid-request", "one of spec.source or spec.datasetId is required")
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
            raise refusal("invalid-request", "the body must be a JSON object")
        # Present-but-null counts as present (and then fails as null): null is not "absent".
        if ("dataset_id" in data) == ("source" in data):
            raise refusal("invalid-request", "give exactly one of dataset_id and source")
        return data

    @field_validator("dataset_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return dataset_id(value)

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
        options = self._options(default_destination, owner)
        if self.source is not None:
            return self._spec_as_given(options)
        assert self.dataset_id is not None
        # The template makes a new URI: the spec is validated as a whole.
        spec: dict[str, Any] = {
            "format": self.export_format,
            "datasetId": self.dataset_id,
            "source": {"uri": dataset_uri_template.replace("{dataset_id}", self.dataset_id)},
        }
        return ExportJobSpec.model_validate({**spec, **options})

    def _options(self, default_destination: str | None, owner: str | None) -> dict[str, Any]:
        """The spec's fields besides its source and format, as the spec's JSON has them."""
        destination = self.destination or default_destination
        options: dict[str, Any] = {
            "destination": {"uri": destination} if destination is not None else None,
            "csv": self.csv,
            "notify": {"url": self.callback_url} if self.callback_url is not None else None,
            "parallelism": self.parallelism,
            "owner": owner,
        }
        return {name: value for name, value in options.items() if value is not None}

    def _spec_as_given(self, options: dict[str, Any]) -> ExportJobSpec:
        """The spec of a request naming its source: every part was validated by this model
        with the same types the spec uses, so it is assembled without validating again (the
        webhook's hot path); the default destination was validated with the settings."""
        assert self.source is not None
        given = {"version_id": self.source.version_id, "etag": self.source.etag}
        source = {"uri": self.source.uri, **{k: v for k, v in given.items() if v is not None}}
        values: dict[str, Any] = {"source": trusted(SourceSpec, source)}
        values["export_format"] = self.export_format
        values.update(options)
        if "destination" in options:
            values["destination"] = trusted(DestinationSpec, options["destination"])
        if "notify" in options:
            values["notify"] = trusted(NotifySpec, options["notify"])
        return trusted(ExportJobSpec, values)
