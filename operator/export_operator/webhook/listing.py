"""`GET /v1/exports`: the query (filters, page size, continue token) and the order of the list.

The list is newest first: by `creationTimestamp`, then by name, so an export created while a
client pages through the list lands before the page it is reading and never shifts the pages it
has yet to read. The continue token names the last item served (its creation time and name), so
it stays valid whatever is created or deleted in between.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from export_operator import resource

_LIMIT = re.compile(r"[0-9]{1,3}")
_PHASES = frozenset(p.value for p in resource.Phase)
SortKey = tuple[str, str]
"""(creation time as a fixed-width UTC string, name); the list runs from the highest key down."""


class QueryError(ValueError):
    """A query parameter that cannot be used; its message says which and why."""


def created_key(obj: Mapping[str, Any]) -> SortKey:
    meta = obj.get("metadata") or {}
    return _sortable(str(meta.get("creationTimestamp") or "")), str(meta.get("name") or "")


@functools.lru_cache(maxsize=256)
def _sortable(timestamp: str) -> str:
    """A creation timestamp as a fixed-width UTC string (cached: the exports created in one
    second share one timestamp, and the webhook converts one per create and watch event)."""
    created = _utc(timestamp) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(dt.UTC) if when.tzinfo is not None else None


@dataclass(frozen=True)
class ListQuery:
    """What `GET /v1/exports` asks for."""

    limit: int
    phase: str | None = None
    source_prefix: str | None = None
    created_since: dt.datetime | None = None
    after: SortKey | None = None
    owner: str | None = None
    """Only this principal's exports (set from the caller, never from the query string)."""

    @classmethod
    def parse(cls, query: Mapping[str, str], *, default_limit: int) -> ListQuery:
        """Read the query parameters.

        Raises:
            QueryError: naming the parameter that is wrong.
        """
        phase = query.get("phase")
        if phase is not None and phase not in _PHASES:
            raise QueryError(f"phase must be one of {', '.join(p.value for p in resource.Phase)}")
        raw_limit = query.get("limit", str(default_limit))
        # Not str.isdigit(): it accepts "²", which int() then refuses.
        if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= 500:
            raise QueryError("limit must be an integer from 1 to 500")
        prefix = query.get("source_prefix")
        if prefix is not None and (not prefix.startswith("s3://") or len(prefix) > 2048):
            raise QueryError("source_prefix must start with s3:// (at most 2048 characters)")
        since = query.get("created_since")
        created_since = None
        if since is not None:
            created_since = _utc(since) if len(since) <= 64 else None
            if created_since is None:
                raise QueryError(
                    "created_since must be an RFC 3339 time with a zone, e.g. 2026-11-01T00:00:00Z"
                )
        token = query.get("continue")
        return cls(
            limit=int(raw_limit),
            phase=phase,
            source_prefix=prefix,
            created_since=created_since,
            after=decode_continue(token) if token is not None else None,
        )

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` passes the filters on what only the whole object holds (the cache
        compares phase and owner on its compact view first)."""
        if self.source_prefix is not None:
            source = ((obj.get("spec") or {}).get("source") or {}).get("uri") or ""
            if not str(source).startswith(self.source_prefix):
                return False
        if self.created_since is not None:
            created = _utc(str((obj.get("metadata") or {}).get("creationTimestamp") or ""))
            if created is None or created < self.created_since:
                return False
        return True


def encode_continue(key: SortKey) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, name = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise QueryError("invalid continue token") from None
    if not (
        isinstance(created, str)
        and isinstance(name, str)
        and len(created) == 27
        and 0 < len(name) <= resource.MAX_NAME_LENGTH
    ):
        raise QueryError("invalid continue token")
    return created, name
