"""The groups of the webhook's settings (settings.py), one concern each, with the same variables
(`EXPORTJOBS_WEBHOOK_` + the field's name, unless a field says otherwise): the HTTP API it serves,
the credentials it accepts, SNS, its calls to the API server, and presigned download URLs.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AliasChoices, Field, model_validator
from pydantic_settings import NoDecode

from export_operator.principals import PrincipalConfig, parse_document
from export_operator.secret_files import read_secret_values
from export_processor.env_settings import CommaList, EnvSettings, Flag, from_text, split_commas

PREFIX = "EXPORTJOBS_WEBHOOK_"

AWS_SNS_HOST_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
"""Hosts SNS signs from and sends SubscribeURLs for (`sns.<region>.amazonaws.com[.cn]`)."""

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


class HttpSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """The HTTP API the webhook serves: where, its limits, its answers' hints, its logs."""

    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on all interfaces
    """Listen address. Default `0.0.0.0`."""

    port: int = 8080
    """Listen port. Default 8080."""

    public_url: Annotated[str, AfterValidator(_public_url)] = ""
    """Where clients reach the API, put before the path of every `Location` header: a path
    prefix (`/exports`, behind an Ingress that strips it) or an absolute base URL
    (`https://api.example.com/exports`). Env `EXPORTJOBS_WEBHOOK_PUBLIC_URL`; default empty:
    `Location` is the path the webhook serves (`/v1/exports/{id}`)."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest accepted request body in bytes (413 above). Default 1 MiB: S3 events are a few KiB;
    the cap bounds memory per request."""

    body_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """Longest time a request body may take to arrive, in seconds (408 `request-timeout` and the
    connection closed after it). Env `EXPORTJOBS_WEBHOOK_BODY_TIMEOUT_SECONDS`, default 10: a
    1 MiB body needs 100 KiB/s; a slowly sent body must not hold a connection for minutes,
    whoever sends it."""

    page_size: int = Field(default=50, ge=1, le=500)
    """Default page size of `GET /v1/exports` (at most 500)."""

    retry_after_seconds: int = 5
    """`Retry-After` on 503 when the API server is down or refuses. Default 5."""

    poll_after_seconds: int = 2
    """`Retry-After` on 202: when a client should first poll the status URL. Default 2."""

    shutdown_timeout_seconds: float = 10.0
    """Grace period for in-flight requests on SIGTERM, in seconds. Default 10 (inside the pod's 30
    s)."""

    log_level: Annotated[str, AfterValidator(str.upper)] = "INFO"
    """Log level name. Default INFO."""

    access_log: Flag = True
    """Log one JSON line per request."""


class AuthSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """The credentials the webhook accepts: principals, unnamed tokens, EventBridge API keys."""

    principal_configs: Annotated[
        dict[str, PrincipalConfig], NoDecode, from_text(parse_document)
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

    eventbridge_api_key_header: Annotated[str, AfterValidator(str.lower)] = "x-api-key"
    """Header carrying the API key of an EventBridge API destination (its connection's API key
    name). Default `x-api-key`."""

    eventbridge_api_keys: CommaList = Field(
        default=(), validation_alias=f"{PREFIX}EVENTBRIDGE_API_KEY"
    )
    """Accepted values of that header, plus those in
    `EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_FILE`. Default none: EventBridge callers then need a
    bearer token."""

    eventbridge_api_key_file: str | None = None
    """The file (or mounted Secret directory) whose keys `eventbridge_api_keys` gets too."""

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """`tokens` and `eventbridge_api_keys` get the values of their files too, and
        `principal_configs` the principals file's."""
        if not isinstance(data, dict):
            return data
        data = cls.route(data)  # keyed by field
        principals_file = data.get("principals_file")
        if principals_file and not data.get("principal_configs"):
            path = Path(principals_file)
            if path.is_file():  # an optional Secret key that is not given: no file
                data["principal_configs"] = path.read_text()
        for field, file_field in (
            ("tokens", "tokens_file"),
            ("eventbridge_api_keys", "eventbridge_api_key_file"),
        ):
            if data.get(file_field):
                given = data.get(field) or ()
                given = split_commas(given) if isinstance(given, str) else tuple(given)
                data[field] = (*given, *read_secret_values(data[file_field]))
        return data


class SnsSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """Amazon SNS: the topics accepted, replay protection, and (tests only) where certificates
    may come from."""

    NOT_FROM_ENV: ClassVar[frozenset[str]] = frozenset(
        {"sns_host_pattern", "sns_port", "sns_ssl_context"}
    )

    sns_topic_arns: CommaList = ()
    """SNS topics whose messages are accepted. Default none = SNS is off: every
    SNS message is refused with 403 `sns-disabled` (anyone can sign messages for a topic of their
    own, so there is no safe "any topic")."""

    sns_max_age_seconds: int = Field(default=3600, ge=1)
    """SNS messages whose `Timestamp` is older than this (or this far in the future) are refused as
    replays, in seconds. Default 3600 (SNS retries a delivery for at most an hour by default)."""

    sns_host_pattern: Annotated[str, AfterValidator(_regex)] = AWS_SNS_HOST_PATTERN
    """Regex the host of SigningCertURL and SubscribeURL must match. Not read from the
    environment on purpose: only tests (constructing settings in code) may change it."""

    sns_port: int = 443
    """The only port SigningCertURL and SubscribeURL may name. Test-only, like
    `sns_host_pattern`: SNS serves both on 443."""

    sns_ssl_context: ssl.SSLContext | None = Field(default=None, exclude=True)
    """TLS trust for fetching certificates and SubscribeURLs; None = system CAs. Test-only, like
    `sns_host_pattern`."""


class ApiServerSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """The webhook's calls to the Kubernetes API server and its ExportJob cache."""

    api_timeout_seconds: float = 5.0
    """Timeout of one API-server call in seconds; a create not answered is tried once more, then the
    caller gets 503. Default 5 (twice that stays below client timeouts such as SNS's 15 s)."""

    create_concurrency: int = Field(default=16, ge=1, le=256)
    """ExportJob creates in flight at once for one event, in calls. Default 16: enough to keep the
    API server busy without queueing hundreds of calls on the API client's connection pool, where
    they would time out waiting (docs/benchmarks.md, "Figures behind constants")."""

    watch_timeout_seconds: int = 300
    """Server-side timeout of one watch request of the ExportJob cache, in seconds; the watch
    resumes from the last resourceVersion."""

    negative_cache_seconds: float = 2.0
    """How long an id that the cache and a direct API read both did not find answers 404 without
    another API read, in seconds. Default 2: an id created through another replica is found by a
    direct read at most this late."""


class PresignSettings(EnvSettings, env_prefix=PREFIX, component="webhook"):
    """Presigned download URLs of results: the S3 endpoint, region and lifetime."""

    presign_expiry_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """Lifetime of presigned result download URLs in seconds. Default 3600."""

    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices(f"{PREFIX}S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    """S3 endpoint for presigning (MinIO or another S3-compatible store). Env
    `EXPORTJOBS_WEBHOOK_S3_ENDPOINT_URL`, else `AWS_ENDPOINT_URL`; unset = AWS."""

    s3_region: str | None = None
    """Region for presigning. Env `EXPORTJOBS_WEBHOOK_S3_REGION`, else the AWS chain."""
