"""Give freed heap memory back to the system after a cache shrank a lot.

Python frees the objects of deleted cache entries, but the C allocator keeps the pages for
reuse: without this, the webhook's RSS stays at its high-water mark after 50,000 retained
exports are deleted (docs/benchmarks.md, "Webhook memory"). glibc's `malloc_trim(0)` returns
the free pages of every arena; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
