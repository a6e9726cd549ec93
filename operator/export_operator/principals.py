"""Principals: the named callers of one deployment, read from the auth Secret.

Each bearer token, EventBridge API key and SNS topic ARN maps to one principal. An export records
the principal that created it (`spec.owner`); a principal sees, cancels and presigns only its own
exports unless it is an admin, and its Idempotency-Keys are its own. A principal's share of the
queue (`weight`, `maxRunning`, `maxQueued`) and its request rate are configured here too, so the
webhook and the operator read the same document.

The document (the Secret's `principals` key, a JSON object; docs/security.md):

    {"team-a": {"tokens": ["..."],                  # bearer tokens (API calls, S3/MinIO relays)
                "eventBridgeApiKeys": ["..."],      # values of the EventBridge API-key header
                "snsTopicArns": ["arn:aws:sns:..."],
                "eventPrefixes": ["s3://exports-input/team-a/"],  # S3 event routes bound to it
                "admin": false, "weight": 1, "maxRunning": 5, "maxQueued": 1000,
                "ratePerSecond": 20, "burst": 40}}

Credentials given without a name (`EXPORTJOBS_WEBHOOK_TOKENS`, the Secret's `tokens` and
`eventbridge-api-keys` keys, `snsTopicArns`) are the admin principal `default`, which sees every
export.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from export_operator.s3names import PREFIX_URI_PATTERN

PRINCIPAL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""A principal's name: a DNS label, so it is also a valid label value and metric label."""
PRINCIPAL_MAX_LENGTH = 63
LEGACY_PRINCIPAL = "default"
"""The admin principal of credentials given without a name (the pre-principal form)."""

_NAME = re.compile(PRINCIPAL_PATTERN)

Secret = Annotated[str, Field(min_length=1, max_length=4096)]


class PrincipalConfig(BaseModel):
    """One principal's entry in the document."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    tokens: tuple[Secret, ...] = ()
    eventbridge_api_keys: tuple[Secret, ...] = Field((), alias="eventBridgeApiKeys")
    sns_topic_arns: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(
        (), alias="snsTopicArns"
    )
    event_prefixes: tuple[Annotated[str, Field(pattern=PREFIX_URI_PATTERN)], ...] = Field(
        (), alias="eventPrefixes"
    )
    admin: StrictBool = False
    weight: StrictInt = Field(1, ge=1, le=1000)
    max_running: StrictInt | None = Field(None, alias="maxRunning", ge=1, le=100_000)
    max_queued: StrictInt | None = Field(None, alias="maxQueued", ge=1, le=10_000_000)
    rate_per_second: float | None = Field(None, alias="ratePerSecond", gt=0, le=100_000)
    burst: StrictInt | None = Field(None, ge=1, le=1_000_000)


@dataclass(frozen=True, slots=True)
class Principal:
    """A named caller and its limits."""

    name: str
    admin: bool = False
    weight: int = 1
    max_running: int | None = None
    max_queued: int | None = None
    rate_per_second: float | None = None
    burst: int | None = None
    event_prefixes: tuple[str, ...] = ()
    """`s3://bucket/prefix/` routes bound to this principal: exports of objects under them are
    owned by it, and only it (or an admin) may post events for them."""
    legacy: bool = False
    """The unnamed credentials' `default`: Idempotency-Keys keep their unscoped names."""

    def sees(self, owner: str | None) -> bool:
        """Whether this principal may read, cancel and presign an export owned by `owner`."""
        return self.admin or owner == self.name


_FROM_CONFIG = {f.name for f in fields(Principal)} & set(PrincipalConfig.model_fields)
"""What a principal takes from its entry as it is: its rights, limits and routes."""


def _digest(secret: str) -> bytes:
    # aiohttp decodes header bytes that are not UTF-8 as surrogates: `surrogateescape` turns
    # them back into the bytes sent instead of raising.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Principals:
    """Credential → principal, for each kind of credential.

    Secrets are looked up by their SHA-256 digest: the time a lookup takes depends on the digest
    of what was presented, which says nothing about how close it came to a configured secret.
    """

    by_name: Mapping[str, Principal] = field(default_factory=dict)
    _tokens: Mapping[bytes, Principal] = field(default_factory=dict)
    _api_keys: Mapping[bytes, Principal] = field(default_factory=dict)
    _topics: Mapping[str, Principal] = field(default_factory=dict)

    @property
    def topic_arns(self) -> tuple[str, ...]:
        return tuple(self._topics)

    def for_token(self, token: str) -> Principal | None:
        return self._tokens.get(_digest(token))

    def for_api_key(self, key: str) -> Principal | None:
        return self._api_keys.get(_digest(key))

    def for_topic(self, arn: str) -> Principal | None:
        return self._topics.get(arn)

    def bound_owner(self, bucket: str, key: str) -> Principal | None:
        """The principal an S3 event route binds `bucket/key` to (the longest prefix), if any."""
        best: tuple[int, Principal] | None = None
        for principal in self.by_name.values():
            for uri in principal.event_prefixes:
                route_bucket, _, prefix = uri[len("s3://") :].partition("/")
                longer = best is None or len(prefix) > best[0]
                if route_bucket == bucket and key.startswith(prefix) and longer:
                    best = (len(prefix), principal)
        return best[1] if best else None

    @classmethod
    def build(
        cls,
        configs: Mapping[str, PrincipalConfig],
        *,
        legacy_tokens: Iterable[str] = (),
        legacy_api_keys: Iterable[str] = (),
        legacy_topics: Iterable[str] = (),
    ) -> Principals:
        """The lookup tables of `configs` plus the unnamed credentials (principal `default`).

        Raises:
            ValueError: a bad name, or one credential given to two principals.
        """
        configs = dict(configs)
        legacy_tokens, legacy_api_keys = tuple(legacy_tokens), tuple(legacy_api_keys)
        legacy_topics = tuple(legacy_topics)
        legacy = bool(legacy_tokens or legacy_api_keys or legacy_topics)
        if legacy and LEGACY_PRINCIPAL in configs:
            raise ValueError(
                f"principal {LEGACY_PRINCIPAL!r} is the unnamed credentials' name: give those "
                "credentials in its entry instead"
            )
        by_name: dict[str, Principal] = {}
        tokens: dict[bytes, Principal] = {}
        api_keys: dict[bytes, Principal] = {}
        topics: dict[str, Principal] = {}

        def add(table: dict[Any, Principal], key: Any, principal: Principal, what: str) -> None:
            if key in table and table[key].name != principal.name:
                raise ValueError(f"one {what} is given to {table[key].name} and {principal.name}")
            table[key] = principal

        if legacy:
            given: dict[str, Any] = {"tokens": legacy_tokens, "eventBridgeApiKeys": legacy_api_keys}
            given.update(snsTopicArns=legacy_topics, admin=True)
            configs[LEGACY_PRINCIPAL] = PrincipalConfig.model_validate(given)
        for name, config in configs.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"principal name {name!r} is not a DNS label (a-z, 0-9, -)")
            limits = config.model_dump(include=_FROM_CONFIG)
            principal = Principal(name=name, legacy=legacy and name == LEGACY_PRINCIPAL, **limits)
            by_name[name] = principal
            for token in config.tokens:
                add(tokens, _digest(token), principal, "bearer token")
            for key in config.eventbridge_api_keys:
                add(api_keys, _digest(key), principal, "EventBridge API key")
            for arn in config.sns_topic_arns:
                add(topics, arn, principal, "SNS topic")
        return cls(by_name=by_name, _tokens=tokens, _api_keys=api_keys, _topics=topics)


def parse_document(text: str) -> dict[str, PrincipalConfig]:
    """The principals document (a JSON object of name → entry); empty text → none.

    Raises:
        ValueError: naming what is wrong (never echoing a secret).
    """
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except ValueError as exc:
        # The position only: the message could quote a secret.
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "?"
        raise ValueError(f"principals: not a JSON document (at {where})") from None
    if not isinstance(document, dict):
        raise ValueError("principals: expected a mapping of principal name to its entry")
    configs: dict[str, PrincipalConfig] = {}
    for name, entry in document.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"principals: name {name!r} is not a DNS label (a-z, 0-9, -)")
        try:
            configs[name] = PrincipalConfig.model_validate(entry or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ValueError(f"principals: {name}: {problems}") from None
    return configs
