"""The webhook's settings: one pydantic-settings class read once from `EXPORTJOBS_WEBHOOK_*`, its
fields grouped by concern (setting_groups.py; the rules of S3 events here).

Every field documents its unit, default and reason (its docstring is its description).
`WebhookSettings.from_env()` is the only reader of the environment; the rest of the package
receives the settings object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, AliasChoices, Field, model_validator
from pydantic_settings import NoDecode

from export_operator.callbacks import ENV_ALLOW_HTTP, ENV_ALLOWLIST, CallbackPolicy
from export_operator.principals import Principals
from export_operator.resource import ExportFormat, parse_s3_uri
from export_operator.webhook.bounds import Bounds, S3Prefix, template_prefix
from export_operator.webhook.setting_groups import (
    PREFIX,
    ApiServerSettings,
    AuthSettings,
    HttpSettings,
    PresignSettings,
    SnsSettings,
)
from export_processor.env_settings import (
    CommaListOrNone,
    EnvSettings,
    ReadBy,
    from_text,
    split_commas,
)

V = TypeVar("V")


@dataclass(frozen=True)
class PrefixRule(Generic[V]):
    """Objects under `s3://bucket/prefix` get `value` (an export format, a callback URL)."""

    bucket: str
    prefix: str
    value: V

    def matches(self, *, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


FormatRule = PrefixRule[ExportFormat]
CallbackRule = PrefixRule[str]


def longest_match(rules: Iterable[PrefixRule[V]], *, bucket: str, key: str) -> V | None:
    """The value of the matching rule with the longest prefix (the first of equals), or None."""
    best: PrefixRule[V] | None = None
    for rule in rules:
        if rule.matches(bucket=bucket, key=key) and (
            best is None or len(rule.prefix) > len(best.prefix)
        ):
            best = rule
    return best.value if best else None


def _dataset_template(template: str) -> str:
    if "{dataset_id}" not in template:
        raise ValueError("dataset URI template must contain {dataset_id}")
    return template


def _prefix_uri(uri: str | None) -> str | None:
    if uri is not None:
        parse_s3_uri(uri, prefix=True)
    return uri


class EventRules(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """S3 events: the format and callback of an export by bucket and key prefix, and how many
    records one request may carry."""

    format_rules: Annotated[
        tuple[FormatRule, ...], NoDecode, from_text(lambda t: parse_format_rules(t))
    ] = ()
    """Output format of S3 events without a `?format=` parameter, by bucket and key prefix; the
    longest matching prefix wins, e.g. `incoming/reports/=parquet,exports-input=csv.gz`. Default
    none: events need `?format=`."""

    callback_rules: Annotated[
        tuple[CallbackRule, ...], NoDecode, from_text(lambda t: parse_callback_rules(t))
    ] = ()
    """`spec.notify.url` of S3-triggered exports, by bucket and key prefix; the longest matching
    prefix wins, e.g.
    `incoming/reports/=https://hooks.example.com/exports,incoming=https://other.example/h` (URLs
    without commas). Default none: S3-triggered exports send no callback."""

    max_event_records: int = Field(default=500, ge=1, le=100_000)
    """Most object records one `POST /v1/events/s3` may carry (413 `too-many-records` above).
    Default 500: S3, MinIO and EventBridge send one record per request; relays batching more must
    split them. Bounds the work, memory and time of one request, which must end inside SNS's 15 s
    (docs/benchmarks.md, "Figures behind constants")."""


class WebhookSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """Everything the webhook needs, fixed at start-up, grouped by concern (each group reads its
    own variables; docs/configuration.md lists them all)."""

    namespace: str = Field(
        default="default",
        validation_alias=AliasChoices(f"{PREFIX}NAMESPACE", "EXPORTJOBS_NAMESPACE"),
    )
    """Namespace the ExportJobs are created in and read from; else the shared
    `EXPORTJOBS_NAMESPACE`, else `default`."""

    dataset_uri_template: Annotated[str, AfterValidator(_dataset_template)] = (
        "s3://datasets/{dataset_id}.csv"
    )
    """How `dataset_id` resolves to a source URI; `{dataset_id}` is replaced by the UUID."""

    callback_policy: Annotated[
        CallbackPolicy, ReadBy(CallbackPolicy.from_env, (ENV_ALLOWLIST, ENV_ALLOW_HTTP))
    ] = Field(default_factory=CallbackPolicy)
    """Where callbacks may go, checked on `callback_url` at POST (422 otherwise) and on the
    rules above at start-up. Env `EXPORTJOBS_CALLBACK_ALLOWLIST` and
    `EXPORTJOBS_CALLBACK_ALLOW_HTTP`, shared with the operator (docs/notifications.md)."""

    destination_uri: Annotated[str | None, AfterValidator(_prefix_uri)] = None
    """`spec.destination.uri` for exports that name none (`s3://bucket/prefix/`); default unset,
    so the operator's default applies."""

    allowed_sources: CommaListOrNone = None
    """Prefixes (`s3://bucket/prefix/`) exports may read from; anything else is refused with 422
    `source-not-allowed`, and so is anything under an allowed destination. Default (None): the
    configured input locations, that is the folder of `dataset_uri_template` and the prefixes of
    `format_rules`."""

    allowed_destinations: CommaListOrNone = None
    """Prefixes exports may write under (422 `destination-not-allowed` otherwise); S3 events for
    objects under them are ignored, so an export never triggers another. Default
    (None): `destination_uri` alone."""

    http: HttpSettings = HttpSettings()
    """The HTTP API it serves."""
    auth: AuthSettings = AuthSettings()
    """The credentials it accepts."""
    sns: SnsSettings = SnsSettings()
    """Amazon SNS."""
    kube: ApiServerSettings = ApiServerSettings()
    """Its calls to the API server and its cache."""
    presign: PresignSettings = PresignSettings()
    """Presigned download URLs."""
    events: EventRules = EventRules()
    """S3 events' formats, callbacks and size."""

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        for rule in self.events.callback_rules:
            self.callback_policy.check_url(rule.value)
        _ = self.bounds  # parse the prefixes now: a bad one fails at start-up
        _ = self.principals  # and the principals: a credential given twice fails now
        return self

    @functools.cached_property
    def principals(self) -> Principals:
        """Credential → principal: the named ones and the unnamed `default`."""
        return Principals.build(
            self.auth.principal_configs,
            legacy_tokens=self.auth.tokens,
            legacy_api_keys=self.auth.eventbridge_api_keys,
            legacy_topics=self.sns.sns_topic_arns,
        )

    def callback_for(self, *, bucket: str, key: str) -> str | None:
        """The configured callback URL for an object, by the longest matching rule."""
        return longest_match(self.events.callback_rules, bucket=bucket, key=key)

    @functools.cached_property
    def bounds(self) -> Bounds:
        """The allowed source and destination prefixes, defaults filled in."""
        sources = self.allowed_sources
        if sources is None:
            rules = (f"s3://{rule.bucket}/{rule.prefix}" for rule in self.events.format_rules)
            sources = (template_prefix(self.dataset_uri_template), *rules)
        destinations = self.allowed_destinations
        if destinations is None:
            destinations = (self.destination_uri,) if self.destination_uri else ()
        try:
            return Bounds(
                sources=tuple(S3Prefix.parse(uri) for uri in sources),
                destinations=tuple(S3Prefix.parse(uri) for uri in destinations),
            )
        except ValueError as exc:
            raise ValueError(f"allowed prefixes: {exc}") from None

    def format_for(self, *, bucket: str, key: str) -> ExportFormat | None:
        """The configured format for an object, by the longest matching bucket/prefix rule."""
        return longest_match(self.events.format_rules, bucket=bucket, key=key)


def parse_format_rules(text: str) -> tuple[FormatRule, ...]:
    """Parse `bucket[/prefix]=format` pairs separated by commas.

    Raises:
        ValueError: on a malformed pair or an unknown format.
    """
    return _parse_rules(text, "format", ExportFormat)


def parse_callback_rules(text: str) -> tuple[CallbackRule, ...]:
    """Parse `bucket[/prefix]=url` pairs separated by commas (URLs without commas).

    Raises:
        ValueError: on a malformed pair.
    """
    return _parse_rules(text, "url", str, name="callback")


def _parse_rules(
    text: str, what: str, value: Callable[[str], V], *, name: str = ""
) -> tuple[PrefixRule[V], ...]:
    rules = []
    for item in split_commas(text):
        where, sep, raw = item.partition("=")
        if not sep or not where.strip() or not raw.strip():
            raise ValueError(f"{name or what} rule {item!r} is not bucket[/prefix]={what}")
        bucket, _, prefix = where.strip().partition("/")
        try:
            rules.append(PrefixRule(bucket=bucket, prefix=prefix, value=value(raw.strip())))
        except ValueError:
            raise ValueError(f"{name or what} rule {item!r}: unknown {what} {raw!r}") from None
    return tuple(rules)
