"""How the processor's memory is allocated: glibc's malloc for Python's bytes, jemalloc for
Arrow's buffers (docs/processor.md, "Memory")."""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def limit_malloc() -> None:
    """glibc's malloc, used for Python's bytes (S3 ranges, parts), raises its mmap threshold
    after each large free and keeps one arena per thread: 8 MiB buffers allocated on the S3
    threads and freed on others then stay in the heap. A fixed 1 MiB threshold returns them
    (docs/processor.md, "Memory")."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc
        pass


def use_memory_pool(decay_ms: int) -> None:
    """Arrow allocates from jemalloc, returning freed pages to the system after `decay_ms`: the
    lowest peak of the three allocators at the same speed (docs/processor.md, "Memory").
    settings.ARROW_DECAY says which formats keep freed pages a little while, and why."""
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        return
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(decay_ms)
