"""The webhook's settings: one pydantic-settings class read once from `EXPORTJOBS_WEBHOOK_*`.

Every field documents its unit, default and reason (its docstring is its description).
`WebhookSettings.from_env()` is the only reader of the environment; the rest of the package
receives the settings object.
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from export_operator.callbacks import CallbackPolicy
from export_operator.config import CommaList, CommaListOrNone, EnvSettings, Flag, split_commas
from export_operator.principals import PrincipalConfig, Principals, parse_document
from export_operator.resource import ExportFormat, parse_s3_uri
from export_operator.secret_files import read_secret_values
from export_operator.webhook.bounds import Bounds, S3Prefix, template_prefix

PREFIX = "EXPORTJOBS_WEBHOOK_"

V = TypeVar("V")

AWS_SNS_HOST_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
"""Hosts SNS signs from and sends SubscribeURLs for (`sns.<region>.amazonaws.com[.cn]`)."""


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


_PUBLIC_URL = re.compile(r"(https?://[^\s/?#]+)?(/[^\s?#]*)?")


def _public_url(url: str) -> str:
    if url and not _PUBLIC_URL.fullmatch(url):
        raise ValueError("public URL must be a path (/prefix) or an http(s):// base URL")
    return url.rstrip("/")


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


def _rules(parse: Any) -> BeforeValidator:
    """Rules written `bucket[/prefix]=value,...` in the environment; given as they are in code."""
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


class WebhookSettings(EnvSettings):
    """Everything the webhook needs, fixed at start-up."""

    model_config = EnvSettings.model_config | {"env_prefix": PREFIX}
    COMPONENT: ClassVar[str] = "webhook"
    NOT_FROM_ENV: ClassVar[frozenset[str]] = frozenset(
        {"sns_host_pattern", "sns_port", "sns_ssl_context", "callback_policy"}
    )

    namespace: str = Field(
        "default", validation_alias=AliasChoices(f"{PREFIX}NAMESPACE", "EXPORTJOBS_NAMESPACE")
    )
    """Namespace the ExportJobs are created in and read from; else the shared
    `EXPORTJOBS_NAMESPACE`, else `default`."""

    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on all interfaces
    """Listen address. Default `0.0.0.0`."""

    port: int = 8080
    """Listen port. Default 8080."""

    principal_configs: Annotated[
        dict[str, PrincipalConfig],
        NoDecode,
        BeforeValidator(lambda value: parse_document(value) if isinstance(value, str) else value),
    ] = Field(default_factory=dict, validation_alias=f"{PREFIX}PRINCIPALS")
    """Named principals: their tokens, EventBridge keys, SNS topics, event routes, role and
    limits (`export_operator.principals`, docs/security.md). Env `EXPORTJOBS_WEBHOOK_PRINCIPALS`
    (a JSON object) or `EXPORTJOBS_WEBHOOK_PRINCIPALS_FILE`. Default none: only the unnamed
    credentials below."""

    principals_file: str | None = None
    """A file holding the principals document (the chart mounts the auth Secret's `principals`
    key); read when `EXPORTJOBS_WEBHOOK_PRINCIPALS` is not given, ignored when absent."""

    tokens: CommaList = ()
    """Unnamed bearer tokens accepted from API and MinIO callers: each is the admin principal
    `default`, which sees every export (the form before principals). Env `EXPORTJOBS_WEBHOOK_TOKENS`
    (comma-separated, e.g. from a Secret key) plus the tokens in `EXPORTJOBS_WEBHOOK_TOKENS_FILE`
    (one per line, or a mounted Secret directory: every file is read). Default none: then only
    SNS-signed and EventBridge-key requests are accepted, everything else gets 401."""

    tokens_file: str | None = None
    """The file (or mounted Secret directory) whose tokens `tokens` gets too."""

    dataset_uri_template: Annotated[str, AfterValidator(_dataset_template)] = (
        "s3://datasets/{dataset_id}.csv"
    )
    """How `dataset_id` resolves to a source URI; `{dataset_id}` is replaced by the UUID."""

    format_rules: Annotated[
        tuple[FormatRule, ...], NoDecode, _rules(lambda t: parse_format_rules(t))
    ] = ()
    """Output format of S3 events without a `?format=` parameter, by bucket and key prefix; the
    longest matching prefix wins, e.g. `incoming/reports/=parquet,exports-input=csv.gz`. Default
    none: events need `?format=`."""

    callback_rules: Annotated[
        tuple[CallbackRule, ...], NoDecode, _rules(lambda t: parse_callback_rules(t))
    ] = ()
    """`spec.notify.url` of S3-triggered exports, by bucket and key prefix; the longest matching
    prefix wins, e.g.
    `incoming/reports/=https://hooks.example.com/exports,incoming=https://other.example/h` (URLs
    without commas). Default none: S3-triggered exports send no callback."""

    callback_policy: CallbackPolicy = Field(default_factory=CallbackPolicy)
    """Where callbacks may go, checked on `callback_url` at POST (422 otherwise) and on the
    rules above at start-up. Env `EXPORTJOBS_CALLBACK_ALLOWLIST` and
    `EXPORTJOBS_CALLBACK_ALLOW_HTTP`, shared with the operator (docs/notifications.md)."""

    destination_uri: Annotated[str | None, AfterValidator(_prefix_uri)] = None
    """`spec.destination.uri` for exports that name none (`s3://bucket/prefix/`); default unset,
    so the operator's default applies."""

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    """Largest accepted request body in bytes (413 above). Default 1 MiB: S3 events are a few KiB;
    the cap bounds memory per request."""

    allowed_sources: CommaListOrNone = None
    """Prefixes (`s3://bucket/prefix/`) exports may read from; anything else is refused with 422
    `source-not-allowed`, and so is anything under an allowed destination. Default (None): the
    configured input locations, that is the folder of `dataset_uri_template` and the prefixes of
    `format_rules`."""

    allowed_destinations: CommaListOrNone = None
    """Prefixes exports may write under (422 `destination-not-allowed` otherwise); S3 events for
    objects under them are ignored, so an export never triggers another. Default
    (None): `destination_uri` alone."""

    sns_topic_arns: CommaList = ()
    """SNS topics whose messages are accepted. Default none = SNS is off: every
    SNS message is refused with 403 `sns-disabled` (anyone can sign messages for a topic of their
    own, so there is no safe "any topic")."""

    sns_max_age_seconds: int = Field(3600, ge=1)
    """SNS messages whose `Timestamp` is older than this (or this far in the future) are refused as
    replays, in seconds. Default 3600 (SNS retries a delivery for at most an hour by default)."""

    body_timeout_seconds: float = Field(10.0, gt=0, le=600)
    """Longest time a request body may take to arrive, in seconds (408 `request-timeout` and the
    connection closed after it). Env `EXPORTJOBS_WEBHOOK_BODY_TIMEOUT_SECONDS`, default 10: a
    1 MiB body needs 100 KiB/s; a slowly sent body must not hold a connection for minutes,
    whoever sends it."""

    max_event_records: int = Field(500, ge=1, le=100_000)
    """Most object records one `POST /v1/events/s3` may carry (413 `too-many-records` above).
    Default 500: S3, MinIO and EventBridge send one record per request; relays batching more must
    split them. Bounds the work, memory and time of one request, which must end inside SNS's 15 s
    (docs/benchmarks.md, "Figures behind constants")."""

    create_concurrency: int = Field(16, ge=1, le=256)
    """ExportJob creates in flight at once for one event, in calls. Default 16: enough to keep the
    API server busy without queueing hundreds of calls on the API client's connection pool, where
    they would time out waiting (docs/benchmarks.md, "Figures behind constants")."""

    sns_host_pattern: Annotated[str, AfterValidator(_regex)] = AWS_SNS_HOST_PATTERN
    """Regex the host of SigningCertURL and SubscribeURL must match. Not read from the
    environment on purpose: only tests (constructing settings in code) may change it."""

    sns_port: int = 443
    """The only port SigningCertURL and SubscribeURL may name. Test-only, like
    `sns_host_pattern`: SNS serves both on 443."""

    sns_ssl_context: ssl.SSLContext | None = Field(default=None, exclude=True)
    """TLS trust for fetching certificates and SubscribeURLs; None = system CAs. Test-only, like
    `sns_host_pattern`."""

    eventbridge_api_key_header: Annotated[str, AfterValidator(str.lower)] = "x-api-key"
    """Header carrying the API key of an EventBridge API destination (its connection's API key
    name). Default `x-api-key`."""

    eventbridge_api_keys: CommaList = Field((), validation_alias=f"{PREFIX}EVENTBRIDGE_API_KEY")
    """Accepted values of that header, plus those in
    `EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_FILE`. Default none: EventBridge callers then need a
    bearer token."""

    eventbridge_api_key_file: str | None = None
    """The file (or mounted Secret directory) whose keys `eventbridge_api_keys` gets too."""

    presign_expiry_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)
    """Lifetime of presigned result download URLs in seconds. Default 3600."""

    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices(f"{PREFIX}S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    """S3 endpoint for presigning (MinIO or another S3-compatible store). Env
    `EXPORTJOBS_WEBHOOK_S3_ENDPOINT_URL`, else `AWS_ENDPOINT_URL`; unset = AWS."""

    s3_region: str | None = None
    """Region for presigning. Env `EXPORTJOBS_WEBHOOK_S3_REGION`, else the AWS chain."""

    api_timeout_seconds: float = 5.0
    """Timeout of one API-server call in seconds; a create not answered is tried once more, then the
    caller gets 503. Default 5 (twice that stays below client timeouts such as SNS's 15 s)."""

    retry_after_seconds: int = 5
    """`Retry-After` on 503 when the API server is down or refuses. Default 5."""

    poll_after_seconds: int = 2
    """`Retry-After` on 202: when a client should first poll the status URL. Default 2."""

    watch_timeout_seconds: int = 300
    """Server-side timeout of one watch request of the ExportJob cache, in seconds; the watch
    resumes from the last resourceVersion."""

    negative_cache_seconds: float = 2.0
    """How long an id that the cache and a direct API read both did not find answers 404 without
    another API read, in seconds. Default 2: an id created through another replica is found by a
    direct read at most this late."""

    page_size: int = Field(50, ge=1, le=500)
    """Default page size of `GET /v1/exports` (at most 500)."""

    shutdown_timeout_seconds: float = 10.0
    """Grace period for in-flight requests on SIGTERM, in seconds. Default 10 (inside the pod's 30
    s)."""

    log_level: Annotated[str, AfterValidator(str.upper)] = "INFO"
    """Log level name. Default INFO."""

    access_log: Flag = True
    """Log one JSON line per request."""

    public_url: Annotated[str, AfterValidator(_public_url)] = ""
    """Where clients reach the API, put before the path of every `Location` header: a path
    prefix (`/exports`, behind an Ingress that strips it) or an absolute base URL
    (`https://api.example.com/exports`). Env `EXPORTJOBS_WEBHOOK_PUBLIC_URL`; default empty:
    `Location` is the path the webhook serves (`/v1/exports/{id}`)."""

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """`tokens` and `eventbridge_api_keys` get the values of their files too."""
        if not isinstance(data, dict):
            return data
        principals_file = data.get("principals_file")
        if principals_file and not data.get(f"{PREFIX}PRINCIPALS"):
            path = Path(principals_file)
            if path.is_file():  # an optional Secret key that is not given: no file
                data = {**data, f"{PREFIX}PRINCIPALS": path.read_text()}
        for field, file_field, alias in (
            ("tokens", "tokens_file", "tokens"),
            ("eventbridge_api_keys", "eventbridge_api_key_file", f"{PREFIX}EVENTBRIDGE_API_KEY"),
        ):
            if data.get(file_field):
                key = alias if alias in data else field
                given = data.get(key) or ()
                given = split_commas(given) if isinstance(given, str) else tuple(given)
                data = {**data, key: (*given, *read_secret_values(data[file_field]))}
        return data

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        for rule in self.callback_rules:
            self.callback_policy.check_url(rule.value)
        _ = self.bounds  # parse the prefixes now: a bad one fails at start-up
        _ = self.principals  # and the principals: a credential given twice fails now
        return self

    @functools.cached_property
    def principals(self) -> Principals:
        """Credential → principal: the named ones and the unnamed `default`."""
        return Principals.build(
            self.principal_configs,
            legacy_tokens=self.tokens,
            legacy_api_keys=self.eventbridge_api_keys,
            legacy_topics=self.sns_topic_arns,
        )

    def callback_for(self, *, bucket: str, key: str) -> str | None:
        """The configured callback URL for an object, by the longest matching rule."""
        return longest_match(self.callback_rules, bucket=bucket, key=key)

    @functools.cached_property
    def bounds(self) -> Bounds:
        """The allowed source and destination prefixes, defaults filled in."""
        sources = self.allowed_sources
        if sources is None:
            rules = (f"s3://{rule.bucket}/{rule.prefix}" for rule in self.format_rules)
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
        return longest_match(self.format_rules, bucket=bucket, key=key)


def parse_format_rules(text: str) -> tuple[FormatRule, ...]:
    """Parse `bucket[/prefix]=format` pairs separated by commas.

    Raises:
        ValueError: on a malformed pair or an unknown format.
    """
    rules = []
    for item in split_commas(text):
        where, sep, fmt = item.partition("=")
        if not sep or not where:
            raise ValueError(f"format rule {item!r} is not bucket[/prefix]=format")
        bucket, _, prefix = where.partition("/")
        try:
            export_format = ExportFormat(fmt.strip())
        except ValueError:
            raise ValueError(f"format rule {item!r}: unknown format {fmt!r}") from None
        rules.append(FormatRule(bucket=bucket.strip(), prefix=prefix, value=export_format))
    return tuple(rules)


def parse_callback_rules(text: str) -> tuple[CallbackRule, ...]:
    """Parse `bucket[/prefix]=url` pairs separated by commas.

    Raises:
        ValueError: on a malformed pair.
    """
    rules = []
    for item in split_commas(text):
        where, sep, url = item.partition("=")
        if not sep or not where.strip() or not url.strip():
            raise ValueError(f"callback rule {item!r} is not bucket[/prefix]=url")
        bucket, _, prefix = where.strip().partition("/")
        rules.append(CallbackRule(bucket=bucket, prefix=prefix, value=url.strip()))
    return tuple(rules)
