"""Read-your-write across replicas: an id the cache does not hold yet is read once from the API.

Each webhook replica has its own watch-fed cache, so a `GET` right after a `POST` that another
replica answered can reach a replica whose watch has not delivered the object yet. `MissLookup`
answers such a miss with one direct API read, bounded three ways: one read per id at a time
(concurrent misses of the same id share it), at most `max_in_flight` reads at once (beyond that a
miss is answered from the cache alone, i.e. 404), and an id found absent is remembered for
`negative_ttl` seconds, so a client polling an unknown id costs the API server one read per TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from export_operator.webhook.cache import ExportCache

Reader = Callable[[str], Awaitable[dict[str, Any] | None]]


class MissLookup:
    """Cache first; on a miss, one bounded API read whose result goes into the cache."""

    def __init__(
        self,
        *,
        cache: ExportCache,
        read: Reader,
        negative_ttl: float = 2.0,
        max_in_flight: int = 16,
        max_negatives: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str], None] = lambda result: None,
    ) -> None:
        self._cache = cache
        self._read = read
        self._negative_ttl = negative_ttl
        self._max_in_flight = max_in_flight
        self._max_negatives = max_negatives
        self._clock = clock
        self._observe = observe
        """Called with `found`, `absent` or `unavailable` after each API read (metrics)."""
        self._negatives: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.reads = 0
        """API reads made (tests read it)."""

    async def get(self, name: str) -> dict[str, Any] | None:
        """The ExportJob `name`, from the cache or (once, bounded) from the API server.

        Raises:
            StoreUnavailableError: the cache misses and the API server did not answer.
        """
        obj = self._cache.get(name)
        if obj is not None:
            return obj
        expires = self._negatives.get(name)
        if expires is not None:
            if expires > self._clock():
                return None
            del self._negatives[name]
        pending = self._pending.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._pending) >= self._max_in_flight:
            return None
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        try:
            found = await self._lookup(name)
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._pending[name]

    async def _lookup(self, name: str) -> dict[str, Any] | None:
        self.reads += 1
        try:
            found = await self._read(name)
        except Exception:
            self._observe("unavailable")
            raise  # StoreUnavailableError: nothing remembered
        self._observe("absent" if found is None else "found")
        if found is None:
            self._negatives[name] = self._clock() + self._negative_ttl
            self._negatives.move_to_end(name)
            while len(self._negatives) > self._max_negatives:
                self._negatives.popitem(last=False)
            return None
        self._cache.upsert(found)
        return self._cache.get(name) or found

    def forget(self, name: str) -> None:
        """Drop a remembered absence (the id was just created here)."""
        self._negatives.pop(name, None)
