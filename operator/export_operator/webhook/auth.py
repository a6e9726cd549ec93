"""Credential checks: bearer tokens for API and MinIO callers, the EventBridge API-key header.

Comparisons are constant-time (`hmac.compare_digest`) and visit every configured secret, so the
time taken says nothing about which secret nearly matched.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web


def _matches_any(presented: str, secrets: Iterable[str]) -> bool:
    # aiohttp decodes header bytes that are not UTF-8 as surrogates (`\xff` → `\udcff`);
    # `surrogateescape` turns them back into the bytes sent instead of raising.
    candidate = presented.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate, secret.encode("utf-8"))
    return found


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def has_valid_bearer(request: web.Request, tokens: tuple[str, ...]) -> bool:
    token = bearer_token(request)
    return token is not None and bool(tokens) and _matches_any(token, tokens)


def has_valid_api_key(request: web.Request, *, header: str, keys: tuple[str, ...]) -> bool:
    value = request.headers.get(header)
    return value is not None and bool(keys) and _matches_any(value, keys)
