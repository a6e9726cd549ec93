"""The ExportJob cache that serves `GET`: an in-memory map fed by a list-then-watch loop.

`ExportCache` holds the objects; `ExportWatcher` keeps it current with kubernetes_asyncio: a full
list, then a watch from its resourceVersion (bookmarks on), resumed from the last seen version
when a watch ends, and a fresh list when the API server answers 410 Gone. Writes the webhook makes
itself are put into the cache at once, so a `GET` right after `POST` finds the export.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import logging
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from export_operator import resource
from export_operator.public_view import phase_of

log = logging.getLogger(__name__)


class ExportCache:
    """ExportJobs by name. Not thread-safe: used from the event loop only."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Any]] = {}
        self._sorted: list[str] | None = None
        self.synced = False
        """True once a full list has been loaded (readiness needs it)."""

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._objects.get(name)

    def replace(self, objects: Iterable[dict[str, Any]]) -> None:
        """Replace everything with a fresh list and mark the cache synced."""
        self._objects = {o["metadata"]["name"]: o for o in objects}
        self._sorted = None
        self.synced = True

    def upsert(self, obj: dict[str, Any]) -> None:
        """Store `obj` unless the cache already holds a newer version of it."""
        name = obj["metadata"]["name"]
        current = self._objects.get(name)
        if current is not None and _newer(current, obj):
            return
        if current is None:
            self._sorted = None
        self._objects[name] = obj

    def remove(self, name: str) -> None:
        if self._objects.pop(name, None) is not None:
            self._sorted = None

    def page(
        self, *, phase: str | None, limit: int, continue_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ExportJobs ordered by name, after the one the token names.

        Raises:
            ValueError: when the continue token is not one this cache issued.
        """
        after = decode_continue(continue_token) if continue_token else ""
        if self._sorted is None:
            self._sorted = sorted(self._objects)
        items: list[dict[str, Any]] = []
        start = bisect.bisect_right(self._sorted, after) if after else 0
        for name in self._sorted[start:]:
            obj = self._objects.get(name)
            if obj is None or (phase is not None and phase_of(obj) != phase):
                continue
            if len(items) == limit:
                return items, encode_continue(items[-1]["metadata"]["name"])
            items.append(obj)
        return items, None


def encode_continue(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_continue(token: str) -> str:
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("invalid continue token") from None
    if not name or len(name) > resource.MAX_NAME_LENGTH:
        raise ValueError("invalid continue token")
    return name


def _newer(current: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Whether `current` is newer than `candidate` (resourceVersions compare as integers in
    practice; when they do not parse, the candidate wins)."""
    try:
        return int(current["metadata"]["resourceVersion"]) > int(
            candidate["metadata"]["resourceVersion"]
        )
    except (KeyError, TypeError, ValueError):
        return False


class _GoneError(Exception):
    """The resourceVersion is too old (410): list again."""


class ExportWatcher:
    """Keeps an `ExportCache` in step with the ExportJobs of one namespace."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        cache: ExportCache,
        namespace: str,
        watch_timeout: int,
        request_timeout: float,
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._cache = cache
        self._namespace = namespace
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self.relists = 0
        """How many full lists were made (tests check that 410 leads to one)."""

    async def run(self) -> None:
        """List and watch until cancelled; errors are logged and retried with backoff."""
        version: str | None = None
        backoff = 0.5
        while True:
            try:
                if version is None:
                    version = await self._relist()
                version = await self._watch(version)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except _GoneError:
                log.info("ExportJob watch expired (410 Gone); listing again")
                version = None
            except Exception as exc:
                log.warning("ExportJob watch failed, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _relist(self) -> str:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": self._request_timeout * 4}
            if token:
                kwargs["_continue"] = token
            try:
                page = await self._objects.list_namespaced_custom_object(
                    resource.GROUP, resource.VERSION, self._namespace, resource.PLURAL, **kwargs
                )
            except ApiException as exc:
                if exc.status == 410:
                    items, token = [], None  # the continue token expired: start over
                    continue
                raise
            items += page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                break
        self._cache.replace(items)
        self.relists += 1
        version = str(page["metadata"]["resourceVersion"])
        log.info("ExportJob cache synced: %d objects at resourceVersion %s", len(items), version)
        return version

    async def _watch(self, version: str) -> str:
        """Apply events from `version` until the server ends the watch; the last version seen."""
        stream = watch.Watch()
        try:
            async for event in stream.stream(
                self._objects.list_namespaced_custom_object,
                resource.GROUP,
                resource.VERSION,
                self._namespace,
                resource.PLURAL,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
                _request_timeout=self._watch_timeout + 30,
            ):
                kind, obj = event["type"], event["raw_object"]
                if kind in ("ADDED", "MODIFIED"):
                    self._cache.upsert(obj)
                elif kind == "DELETED":
                    self._cache.remove(obj["metadata"]["name"])
                version = str(obj["metadata"]["resourceVersion"])
        except ApiException as exc:
            if exc.status == 410:
                raise _GoneError from exc
            raise
        finally:
            await stream.close()
        return version
