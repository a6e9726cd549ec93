"""Polling until something holds, with a deadline and a message naming what never happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.2
) -> T:
    """Call `probe` until it returns something truthy, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(
    what: str,
    probe: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15,  # noqa: ASYNC109 - a poll with a message, not a cancellation
    interval: float = 0.1,
) -> T:
    """`wait_for` inside an event loop: `probe` may be a plain function or a coroutine one."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
