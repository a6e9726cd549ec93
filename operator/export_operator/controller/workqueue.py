"""A rate-limited work queue of keys, with the semantics of client-go's `workqueue`.

- A key is queued once however many times it is added while it waits (a "dirty" set); keys come
  out first in, first out, in two lanes: urgent keys (Job creations) before the others, each
  lane in the order its keys came.
- A key is never handed to two workers at once: added again while a worker holds it, it is
  queued again only when that worker calls `done()` (a "processing" set).
- `add_rate_limited()` re-adds a key after a per-key exponential backoff (base · 2^failures,
  capped, with jitter); `forget()` resets the key's failure count after a success.
- `add_after()` re-adds a key after a delay (the earliest pending delay wins).

`run_worker()` is the loop around it: take a key, reconcile it, and on an exception back off;
on success forget the key, or re-add it after `Result.requeue_after`. Single event loop, no
threads: the queue is plain data plus one `asyncio.Event`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from export_processor.common import Backoff

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class QueueShutDownError(Exception):
    """The queue was shut down: workers stop."""


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """What a successful reconcile asks for: nothing, or another look after a delay."""

    requeue_after: float | None = None


class WorkQueue(Generic[K]):
    """Keys to reconcile: deduplicated, one worker per key, with per-key backoff."""

    def __init__(self, *, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._order: collections.deque[K] = collections.deque()
        self._urgent: collections.deque[K] = collections.deque()
        """The urgent lane, served first; `_order` is the other."""
        self._dirty: set[K] = set()
        self._marked: set[K] = set()
        """Keys added urgent since they were last handed out (in `_urgent`, or due there)."""
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        """Set while no key is being processed (`wait_idle`)."""
        self._idle.set()
        self._shut_down = False

    def __len__(self) -> int:
        """Keys waiting to be handed out (not those being processed or delayed)."""
        return len(self._urgent) + len(self._order)

    def add(self, key: K, *, urgent: bool = False) -> None:
        """Queue `key` (a no-op if it already waits; deferred if a worker holds it). `urgent`
        puts it in the urgent lane, after the urgent keys before it (e.g. Job creations ahead of
        thousands of status writes, in the order they were admitted); a key already waiting in
        the other lane moves there."""
        if self._shut_down:
            return
        if urgent and key not in self._marked:
            self._marked.add(key)
            if key in self._dirty and key not in self._processing:
                self._order.remove(key)
                self._urgent.append(key)
                return
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # done() queues it again
        (self._urgent if key in self._marked else self._order).append(key)
        self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds (an earlier pending one for the key wins)."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> float:
        """Queue `key` after its backoff (which grows with each call until `forget`); the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self.backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset `key`'s failure count (after a success)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many times in a row `key` failed (0 after `forget`)."""
        return self._failures.get(key, 0)

    def discard(self, key: K) -> None:
        """Drop everything the queue knows about `key` but a worker holding it (it is gone)."""
        self._failures.pop(key, None)
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    async def get(self) -> K:
        """The next key, which the caller then holds until `done(key)`.

        Raises:
            QueueShutDownError: once the queue is shut down.
        """
        while not (self._urgent or self._order):
            if self._shut_down:
                raise QueueShutDownError
            self._ready.clear()
            await self._ready.wait()
        if self._shut_down:
            raise QueueShutDownError
        key = (self._urgent or self._order).popleft()
        self._dirty.discard(key)
        self._marked.discard(key)
        self._processing.add(key)
        self._idle.clear()
        return key

    def done(self, key: K) -> None:
        """The worker is finished with `key`; queue it again if it was added meanwhile."""
        self._processing.discard(key)
        if not self._processing:
            self._idle.set()
        if key in self._dirty and not self._shut_down:
            (self._urgent if key in self._marked else self._order).append(key)
            self._ready.set()

    async def wait_idle(self) -> None:
        """Return once no key is being processed (after `shut_down`: the last ones finished)."""
        await self._idle.wait()

    def shut_down(self) -> None:
        """Stop handing out keys; waiting workers get `QueueShutDownError`."""
        self._shut_down = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._ready.set()


async def run_worker(
    queue: WorkQueue[K],
    reconcile: Callable[[K], Awaitable[Result]],
    *,
    on_error: Callable[[K, BaseException, float], None] | None = None,
    gate: asyncio.Event | None = None,
) -> None:
    """Take keys from `queue` and reconcile them until the queue shuts down.

    An exception re-queues the key with backoff (`on_error` gets the key, the exception and the
    delay: log it there); a success forgets the key's failures and honours `requeue_after`.
    With a `gate`, keys are taken only while it is set (e.g. while this replica leads).
    """
    while True:
        if gate is not None:
            await gate.wait()
        try:
            key = await queue.get()
        except QueueShutDownError:
            return
        if gate is not None and not gate.is_set():
            queue.done(key)
            queue.add(key)  # not ours to reconcile now: back in line
            continue
        try:
            result = await reconcile(key)
        except Exception as exc:
            delay = queue.add_rate_limited(key)
            if on_error is not None:
                on_error(key, exc, delay)
            else:
                log.warning("reconcile of %s failed (retry in %.1fs): %s", key, delay, exc)
        else:
            queue.forget(key)
            if result.requeue_after is not None:
                queue.add_after(key, result.requeue_after)
        finally:
            queue.done(key)
