"""A principal's limits at the door: its request rate (a token bucket) and its queue cap.

Both answer `429 Too Many Requests` with `Retry-After` (RFC 6585): the rate limit with the time
until the bucket holds a token again, the queue cap with the webhook's retry interval (a slot
frees when one of the principal's exports finishes, which the webhook cannot foresee).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from export_operator.principals import Principal
from export_operator.webhook.problems import Problem, ProblemCode


class RateLimiter:
    """One token bucket per principal: `burst` tokens, refilled at `rate_per_second`; a request
    takes one. Principals without a rate are not limited. Used from the event loop only."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """Principal name → (tokens left, when counted)."""

    def admit(self, principal: Principal, cost: int = 1) -> None:
        """Take `cost` tokens, or none and raise a 429 `rate-limited` problem saying when there
        would be enough."""
        rate = principal.rate_per_second
        if rate is None:
            return
        burst = float(principal.burst or max(1, math.ceil(rate)))
        now = self._clock()
        tokens, then = self._buckets.get(principal.name, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        needed = min(float(cost), burst)
        if tokens >= needed:
            self._buckets[principal.name] = (tokens - needed, now)
            return
        self._buckets[principal.name] = (tokens, now)
        raise Problem(
            ProblemCode.RATE_LIMITED,
            f"principal {principal.name!r} is over its request rate ({rate:g}/s)",
            retry_after=max(1, math.ceil((needed - tokens) / rate)),
            limited=principal.name,
        )


def check_queue(principal: Principal, *, unfinished: int, adding: int, retry_after: int) -> None:
    """Raises a 429 `queue-full` problem when `adding` more exports would take `principal` over
    its `maxQueued` unfinished exports."""
    cap = principal.max_queued
    if cap is not None and unfinished + adding > cap:
        raise Problem(
            ProblemCode.QUEUE_FULL,
            f"principal {principal.name!r} has {unfinished} unfinished exports; "
            f"at most {cap} may wait",
            retry_after=retry_after,
            limited=principal.name,
        )
