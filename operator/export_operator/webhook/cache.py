"""The ExportJob cache that serves `GET`: the ExportJobs of the webhook's namespace by name.

An `Informer` (export_operator.informer, the one the operator uses) keeps it current: a full
list, then a watch from its resourceVersion (bookmarks on), resumed from the last seen version
when a watch ends, a fresh list when the API server answers 410 Gone, and retries with backoff
while the API server is down. Writes the webhook makes itself are put into the cache at once, so
a `GET` right after `POST` finds the export; a watch event older than what the cache holds does
not replace it.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from export_operator import fastjson, resource
from export_operator.freemem import release_free_memory
from export_operator.informer import Informer
from export_operator.kube import Kube, collection_path
from export_operator.public_view import owner_of, phase_of
from export_operator.webhook.listing import ListQuery, SortKey, created_key, encode_continue
from export_processor.common import Backoff

TRIM_AFTER_DELETIONS = 1000
"""After this many deletions (e.g. `kubectl delete ej --all`, or a week's retention ending at
once), the freed memory is given back to the system (export_operator.freemem)..."""
TRIM_DELAY_SECONDS = 5.0
"""... this long after the 1,000th, so that the rest of the batch is freed first."""
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
        self.informer: Informer[CachedExport] = Informer(
            api=None,
            path=collection_path(resource.API_VERSION, resource.PLURAL, namespace),
            decode=compact,
            stale=_newer,
            known=_known,
            watch_timeout=watch_timeout,
            client_timeout=watch_timeout + 30,
            request_timeout=request_timeout,
            retry=RETRY,
        )
        self.informer.listeners.append(self._changed)
        self._deleted = 0
        """Deletions since the freed memory was last given back (`TRIM_AFTER_DELETIONS`)."""
        self._sorted: list[SortKey] | None = None
        self._unfinished: dict[str | None, set[str]] = {}
        """Owner → names of its exports not finished yet (for per-owner queue caps)."""

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
        """The cached view of `name` as an object (a fresh dict: the caller may keep it)."""
        cached = self.informer.get((self.namespace, name))
        return cached.as_object() if cached is not None else None

    def upsert(self, obj: dict[str, Any]) -> None:
        """Store `obj` (what a write or read of the webhook returned) unless the cache already
        holds a newer version of it."""
        self.informer.store(obj)

    def _changed(
        self,
        event_type: str | None,
        view: CachedExport,
        old: CachedExport | None,
        body: Mapping[str, Any],
    ) -> None:
        if old is None or event_type == "DELETED":
            self._sorted = None  # the set of names changed
        if event_type == "DELETED":
            self._deleted += 1
            if self._deleted == TRIM_AFTER_DELETIONS:  # once per batch, after it
                try:
                    asyncio.get_running_loop().call_later(TRIM_DELAY_SECONDS, self._trim)
                except RuntimeError:  # no event loop (a test driving the cache directly)
                    self._trim()
        if old is not None:
            self._unfinished.get(old.owner, set()).discard(old.name)
        if event_type != "DELETED" and not resource.Phase(view.phase).finished:
            self._unfinished.setdefault(view.owner, set()).add(view.name)

    def _trim(self) -> None:
        self._deleted = 0
        release_free_memory()

    def unfinished(self, owner: str) -> int:
        """How many of `owner`'s exports have not finished (Pending, Queued, Running)."""
        return len(self._unfinished.get(owner, ()))

    def page(self, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the ExportJobs `query` selects, newest first (listing.py), after the
        one its continue token names. Owner and phase are compared on the compact view, so a
        principal paging through its few exports among many decodes only those."""
        if self._sorted is None:
            self._sorted = sorted((c.created, c.name) for c in self.informer.items.values())
        keys = self._sorted
        start = bisect.bisect_left(keys, query.after) if query.after else len(keys)
        items: list[dict[str, Any]] = []
        for index in range(start - 1, -1, -1):
            cached = self.informer.get((self.namespace, keys[index][1]))
            if cached is None or (query.owner is not None and cached.owner != query.owner):
                continue
            if query.phase is not None and cached.phase != query.phase:
                continue
            obj = cached.as_object()
            if not query.matches(obj):
                continue
            if len(items) == query.limit:
                return items, encode_continue(created_key(items[-1]))
            items.append(obj)
        return items, None


def _newer(current: CachedExport, candidate: CachedExport) -> bool:
    """Whether `current` is newer than `candidate` (resourceVersions compare as integers in
    practice; when they do not parse, the candidate wins)."""
    try:
        return int(current.resource_version) > int(candidate.resource_version)
    except ValueError:
        return False


def _known(current: CachedExport, body: Mapping[str, Any]) -> bool:
    """Whether the cache holds `body`'s version of the object or a newer one (the watch's copy
    of what the webhook just created is then not encoded a second time)."""
    try:
        return int(current.resource_version) >= int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


KEPT_METADATA = ("name", "namespace", "resourceVersion", "creationTimestamp")
KEPT_ANNOTATIONS = (resource.ANNOTATION_REQUEST_SHA256,)
DROPPED_STATUS = frozenset({"conditions", "observedGeneration"})


@dataclass(frozen=True, slots=True)
class CachedExport:
    """The cached view of an ExportJob: what GET, list, cancel and an Idempotency-Key replay
    read of it, kept as compact JSON, with the fields the cache filters on beside it.

    The rest of the object (managedFields, labels, uid, conditions) is not kept, and JSON bytes
    cost far less memory than the dicts they decode to (docs/benchmarks.md, "Webhook memory");
    a list page decodes only the views it returns.
    """

    name: str
    resource_version: str
    created: str
    """The creation time as listing.py orders it (fixed-width UTC)."""
    phase: str
    owner: str | None
    body: bytes

    def as_object(self) -> dict[str, Any]:
        found: dict[str, Any] = fastjson.loads(self.body)
        return found


def compact(body: Mapping[str, Any]) -> CachedExport:
    """The cached view of an ExportJob object (a watch event's, a list's, or one the webhook
    wrote or read itself)."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in KEPT_METADATA if k in meta}
    annotations = meta.get("annotations") or {}
    found = {k: annotations[k] for k in KEPT_ANNOTATIONS if k in annotations}
    if found:
        kept["annotations"] = found
    view: dict[str, Any] = {"metadata": kept}
    spec = body.get("spec")
    if isinstance(spec, Mapping):
        view["spec"] = spec
    status = body.get("status")
    if isinstance(status, Mapping) and status:
        view["status"] = {k: v for k, v in status.items() if k not in DROPPED_STATUS}
    owner = owner_of(view)
    return CachedExport(
        name=str(meta["name"]),
        resource_version=str(meta.get("resourceVersion") or ""),
        created=sys.intern(created_key(view)[0]),  # one string per second of creations
        phase=sys.intern(phase_of(view)),
        owner=sys.intern(owner) if owner is not None else None,
        body=fastjson.dumps_kept(view),
    )
