"""The ExportJob cache that serves `GET`: the ExportJobs of the webhook's namespace by name.

An `Informer` (export_operator.informer, the one the operator uses) keeps it current: a full
list, then a watch from its resourceVersion (bookmarks on), resumed from the last seen version
when a watch ends, a fresh list when the API server answers 410 Gone, and retries with backoff
while the API server is down. Writes the webhook makes itself are put into the cache at once, so
a `GET` right after `POST` finds the export; a watch event older than what the cache holds does
not replace it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from export_operator import resource
from export_operator.backoff import Backoff
from export_operator.informer import Informer
from export_operator.kube import Kube, collection_path
from export_operator.webhook.listing import ListQuery, SortKey, created_key, encode_continue

RETRY = Backoff(base=0.5, cap=30.0, jitter=0.0)
"""Delays between attempts after a failed list or watch: 0.5 s doubling up to 30 s."""


class ExportCache:
    """ExportJobs of one namespace by name. Not thread-safe: used from the event loop only.

    Args:
        namespace: the namespace whose ExportJobs are cached.
        watch_timeout: server-side timeout of one watch request, in seconds (the watch resumes
            from the last resourceVersion); the client gives up 30 s later.
        request_timeout: timeout of one page of a list, in seconds.
    """

    def __init__(
        self, *, namespace: str, watch_timeout: int = 300, request_timeout: float = 20.0
    ) -> None:
        self.namespace = namespace
        self.informer: Informer[dict[str, Any]] = Informer(
            api=None,
            path=collection_path(resource.API_VERSION, resource.PLURAL, namespace),
            decode=_as_dict,
            stale=_newer,
            watch_timeout=watch_timeout,
            client_timeout=watch_timeout + 30,
            request_timeout=request_timeout,
            retry=RETRY,
        )
        self.informer.listeners.append(self._changed)
        self._sorted: list[SortKey] | None = None

    async def run(self, api: Kube) -> None:
        """List and watch through `api` until cancelled; errors are logged and retried."""
        self.informer.api = api
        await self.informer.run()

    @property
    def synced(self) -> bool:
        """True once a full list has been loaded (readiness needs it)."""
        return self.informer.synced.is_set()

    def __len__(self) -> int:
        return len(self.informer.items)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.informer.get((self.namespace, name))

    def upsert(self, obj: dict[str, Any]) -> None:
        """Store `obj` (what a write or read of the webhook returned) unless the cache already
        holds a newer version of it."""
        self.informer.store(obj)

    def _changed(
        self,
        event_type: str | None,
        view: dict[str, Any],
        old: dict[str, Any] | None,
        body: Mapping[str, Any],
    ) -> None:
        if old is None or event_type == "DELETED":
            self._sorted = None  # the set of names changed

    def page(self, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the ExportJobs `query` selects, newest first (listing.py), after the
        one its continue token names."""
        if self._sorted is None:
            self._sorted = sorted(created_key(obj) for obj in self.informer.items.values())
        keys = self._sorted
        start = bisect.bisect_left(keys, query.after) if query.after else len(keys)
        items: list[dict[str, Any]] = []
        for index in range(start - 1, -1, -1):
            obj = self.get(keys[index][1])
            if obj is None or not query.matches(obj):
                continue
            if len(items) == query.limit:
                return items, encode_continue(created_key(items[-1]))
            items.append(obj)
        return items, None


def _newer(current: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Whether `current` is newer than `candidate` (resourceVersions compare as integers in
    practice; when they do not parse, the candidate wins)."""
    try:
        return int(current["metadata"]["resourceVersion"]) > int(
            candidate["metadata"]["resourceVersion"]
        )
    except (KeyError, TypeError, ValueError):
        return False


def _as_dict(body: Mapping[str, Any]) -> dict[str, Any]:
    """The cached view of an ExportJob: the object itself (as the watch decoded it)."""
    return body if isinstance(body, dict) else dict(body)
