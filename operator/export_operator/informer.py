"""Informers: list + watch of one kind of object into a cache of views (client-go style).

The one way this project keeps a cache of cluster objects: the operator has one `Informer` per
kind (ExportJobs, the processor's Jobs, their pods; views from controller/snapshots.py), the webhook
one of ExportJobs whose views are the objects themselves (webhook/cache.py).

- it lists (paginated) and then watches from the list's resourceVersion, with bookmarks, so a
  watch the server ends (its timeout) or that breaks resumes from the last resourceVersion seen
  without a new list;
- `410 Gone` (that resourceVersion is too old: a long outage, a compacted etcd) means list
  again; objects that vanished meanwhile are reported deleted, the rest once more as listed;
- any other failure (the API server down, a reset connection, a 5xx, an unexpected error) is
  retried with capped exponential backoff, keeping the cache as it was;
- each event's JSON is decoded once and turned straight into a view (`decode`); listeners get
  the event type (`None` for a listed object, as kopf reports its initial listing), the new
  view, the view it replaced and the raw body, which is then dropped;
- a list is turned into views page by page: only the views of the pages read so far and one
  page of raw objects are held, never the whole raw list (its size: docs/benchmarks.md,
  "Webhook memory"); listeners of a listed object get its metadata's namespace and name as the
  body;
- an owner that also writes the objects can `store()` what its writes returned, and with
  `stale` an event older than the view in the cache leaves it as it is (a `GET` right after the
  webhook's own write must not see the watch's older copy).

An event costs one `json.loads`, one snapshot and the listeners (for the operator: a queue
`add`); why this and not kopf's watches: docs/benchmarks.md, "Operator".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from export_operator.kube import Kube, KubeError
from export_processor.common import Backoff

log = logging.getLogger(__name__)

V = TypeVar("V")
Key = tuple[str, str]
Listener = Callable[[str | None, V, V | None, Mapping[str, Any]], None]
"""(event type or None when listed, view, the view it replaced, raw body) → None."""

PAGE_SIZE = 500
"""Objects per page of a list."""
RETRY = Backoff(base=0.8, cap=30.0, jitter=0.2)
"""Delays between attempts after a failed list or watch (client-go's reflector: 800 ms → 30 s)."""


class GoneError(Exception):
    """410 Gone: the resourceVersion asked for is too old; the cache must be listed again."""


def object_key(body: Mapping[str, Any]) -> Key:
    """(namespace, name); the namespace interned: one string for all the objects of a namespace
    instead of one per cached object."""
    meta = body.get("metadata") or {}
    return (sys.intern(str(meta.get("namespace") or "")), str(meta.get("name") or ""))


@dataclasses.dataclass(frozen=True, slots=True)
class ListWatch:
    """How an informer lists and watches (the Informer's keyword arguments of the same names)."""

    label_selector: str
    watch_timeout: int
    """Server-side timeout of one watch request (seconds); the watch then resumes."""
    client_timeout: float
    """Seconds without a byte after which the client gives a watch up."""
    request_timeout: float
    """Seconds one page of a list may take."""
    connect_timeout: float
    page_size: int
    retry: Backoff
    """Delays between attempts after a failed list or watch."""


class _Index(Generic[V]):
    """The views filed by a second key (`by`), e.g. pods by their ExportJob."""

    def __init__(self, by: Callable[[V], Key]) -> None:
        self.by = by
        self.buckets: dict[Key, dict[Key, V]] = {}

    def get(self, key: Key) -> list[V]:
        found = self.buckets.get(key)
        return list(found.values()) if found else []

    def file(self, key: Key, view: V, old: V | None) -> None:
        """File `view` (replacing `old`, the view of the same object)."""
        if old is not None:
            self.drop(key, old)
        self.buckets.setdefault(self.by(view), {})[key] = view

    def drop(self, key: Key, view: V) -> None:
        bucket_key = self.by(view)
        bucket = self.buckets.get(bucket_key)
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del self.buckets[bucket_key]


class Informer(Generic[V]):
    """A cache of views of one kind of object, kept by list + watch; see the module docstring."""

    def __init__(
        self,
        *,
        api: Kube | None,
        path: str,
        decode: Callable[[Mapping[str, Any]], V],
        label_selector: str = "",
        index_by: Callable[[V], Key] | None = None,
        stale: Callable[[V, V], bool] | None = None,
        known: Callable[[V, Mapping[str, Any]], bool] | None = None,
        watch_timeout: int = 300,
        client_timeout: float = 330.0,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        page_size: int = PAGE_SIZE,
        retry: Backoff = RETRY,
    ) -> None:
        self.api = api
        self.path = path
        self.decode = decode
        self.stale = stale
        """(view in the cache, incoming view) → whether the incoming one is older; it is then
        not applied (ADDED/MODIFIED events and `store`; a list replaces everything)."""
        self.options = ListWatch(
            label_selector=label_selector,
            watch_timeout=watch_timeout,
            client_timeout=client_timeout,
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            page_size=page_size,
            retry=retry,
        )
        self.known = known
        """(view in the cache, incoming body) → whether the cache already holds this version or
        a newer one: the body is then not even decoded (the watch's copy of an object the owner
        stored from its own write)."""
        self.items: dict[Key, V] = {}
        """Views by (namespace, name)."""
        self.index = _Index(index_by) if index_by is not None else None
        """With `index_by`: the views by that key, e.g. pods by their ExportJob."""
        self.listeners: list[Listener[V]] = []
        self.resource_version = ""
        """The last resourceVersion seen (a list's, an event's or a bookmark's); "" = list."""
        self.synced = asyncio.Event()
        """Set once the first list is in the cache."""
        self.lists = 0
        """Lists done so far (the first, and one per 410 Gone)."""

    # -- the cache ---------------------------------------------------------------------------
    def get(self, key: Key) -> V | None:
        return self.items.get(key)

    def indexed(self, key: Key) -> list[V]:
        """The views `index_by` files under `key`."""
        return self.index.get(key) if self.index is not None else []

    def _put(self, key: Key, view: V) -> V | None:
        old = self.items.get(key)
        self.items[key] = view
        if self.index is not None:
            self.index.file(key, view, old)
        return old

    def _remove(self, key: Key) -> V | None:
        old = self.items.pop(key, None)
        if old is not None and self.index is not None:
            self.index.drop(key, old)
        return old

    def _notify(
        self, event_type: str | None, view: V, old: V | None, body: Mapping[str, Any]
    ) -> None:
        for listener in self.listeners:
            try:
                listener(event_type, view, old, body)
            except Exception:  # one listener's bug must not stop the watch
                log.exception("listener of %s failed on %s", self.path, object_key(body))

    # -- list and watch ----------------------------------------------------------------------
    async def run(self) -> None:
        """List and watch until cancelled; never raises otherwise."""
        failures = 0
        while True:
            try:
                if not self.resource_version:
                    await self.list_all()
                started = time.monotonic()
                version = self.resource_version
                await self.watch()
                if self.resource_version == version and time.monotonic() - started < 1.0:
                    # Ended at once with nothing new (a proxy, an API server going down):
                    # back off as after an error instead of spinning.
                    failures += 1
                    await asyncio.sleep(self.options.retry.delay(failures))
                else:
                    failures = 0
            except GoneError:
                log.info(
                    "%s: resourceVersion %s is gone, listing again",
                    self.path,
                    self.resource_version,
                )
                self.resource_version = ""
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is, the cache must keep up
                failures += 1
                delay = self.options.retry.delay(failures)
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "%s: %s (attempt %d, again in %.1fs)",
                        self.path,
                        exc or type(exc).__name__,
                        failures,
                        delay,
                    )
                await asyncio.sleep(delay)

    async def list_all(self) -> None:
        """List every object (page by page, each page turned into views before the next is
        read) and make the cache that list."""
        listed: list[tuple[Key, V]] = []
        token = ""
        version = ""
        while True:
            params = {"limit": str(self.options.page_size)}
            if token:
                params["continue"] = token
            if self.options.label_selector:
                params["labelSelector"] = self.options.label_selector
            with _gone_as_gone():
                page = await self._kube().list(
                    self.path, params=params, within=self.options.request_timeout
                )
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            listed += self._views(page.get("items") or [])
            token = str(meta.get("continue") or "")
            del page  # this page's raw objects go before the next page is read
            if not token:
                break
        self._replace_views(listed, resource_version=version)
        log.info("%s: listed %d objects at resourceVersion %s", self.path, len(listed), version)

    def replace(self, bodies: Iterable[Mapping[str, Any]], *, resource_version: str) -> None:
        """Make the cache this list of objects, read at `resource_version` (what `list_all` does
        with the pages it read): objects no longer listed are reported deleted."""
        self._replace_views(self._views(bodies), resource_version=resource_version)

    def _views(self, bodies: Iterable[Mapping[str, Any]]) -> list[tuple[Key, V]]:
        """(key, view) of each listed object that decodes."""
        views: list[tuple[Key, V]] = []
        for body in bodies:
            view = self._decoded(body)
            if view is not None:
                views.append((object_key(body), view))
        return views

    def _replace_views(self, listed: list[tuple[Key, V]], *, resource_version: str) -> None:
        seen = {key for key, _ in listed}
        for key in [k for k in self.items if k not in seen]:
            old = self._remove(key)
            if old is not None:  # its DELETED event was missed
                uid = str(getattr(old, "uid", "") or "")
                meta = {"namespace": key[0], "name": key[1], "uid": uid}
                self._notify("DELETED", old, old, {"metadata": meta})
        for key, view in listed:
            old = self._put(key, view)
            self._notify(None, view, old, {"metadata": {"namespace": key[0], "name": key[1]}})
        self.resource_version = resource_version
        self.lists += 1
        self.synced.set()

    async def watch(self) -> None:
        """Watch from `resource_version` until the server ends the watch (then return)."""
        params = {
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": str(self.options.watch_timeout),
        }
        if self.options.label_selector:
            params["labelSelector"] = self.options.label_selector
        with _gone_as_gone():
            async for event in self._kube().watch(
                self.path,
                params=params,
                read_timeout=self.options.client_timeout,
                connect_timeout=self.options.connect_timeout,
            ):
                self.handle_event(event)

    def handle_event(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event to the cache and tell the listeners."""
        event_type = str(event.get("type") or "")
        body = event.get("object") or {}
        if event_type == "ERROR":
            code = int(body.get("code") or 0)
            message = str(body.get("message") or body)
            if code == 410:
                raise GoneError(message)
            raise KubeError(code, message)
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if event_type == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        key = object_key(body)
        if event_type == "DELETED":
            old = self._remove(key)
            view = self._decoded(body) or old
            if view is not None:
                self._notify(event_type, view, old, body)
        elif event_type in ("ADDED", "MODIFIED"):
            self._apply(event_type, key, body)
        self.resource_version = version or self.resource_version

    def store(self, body: Mapping[str, Any]) -> None:
        """Put an object the owner wrote or read itself (not from the watch) into the cache, as
        an event would (listeners hear ADDED or MODIFIED); the watch goes on from where it was."""
        key = object_key(body)
        self._apply("MODIFIED" if key in self.items else "ADDED", key, body)

    def _apply(self, event_type: str, key: Key, body: Mapping[str, Any]) -> None:
        cached = self.items.get(key)
        if cached is not None and self.known is not None and self.known(cached, body):
            return
        view = self._decoded(body)
        if view is None:
            return
        if cached is not None and self.stale is not None and self.stale(cached, view):
            return
        old = self._put(key, view)
        self._notify(event_type, view, old, body)

    def _decoded(self, body: Mapping[str, Any]) -> V | None:
        try:
            return self.decode(body)
        except (KeyError, ValueError, TypeError, AttributeError):
            log.warning("%s: cannot read %s", self.path, object_key(body), exc_info=True)
            return None

    def _kube(self) -> Kube:
        if self.api is None:
            raise RuntimeError("the informer has no API client")
        return self.api


@contextlib.contextmanager
def _gone_as_gone() -> Iterator[None]:
    """A 410 answer to a list or watch means: list again."""
    try:
        yield
    except KubeError as exc:
        if exc.status == 410:
            raise GoneError(exc.message) from exc
        raise
