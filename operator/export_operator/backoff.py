"""Capped exponential backoff with jitter: the one retry delay of the operator's work queue and
of the informers that feed the operator and the webhook."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Per-key exponential backoff: `base · 2^(failures-1)`, at most `cap`, plus up to
    `jitter` times that at random (so keys that failed together do not retry together)."""

    base: float = 0.5
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int, *, rand: Callable[[], float] = random.random) -> float:
        exponent = min(max(failures - 1, 0), 62)
        plain = min(self.cap, self.base * 2.0**exponent)
        return plain * (1.0 + self.jitter * rand())
