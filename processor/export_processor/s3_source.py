"""An S3 object read as prefetched ranged GETs into reused download buffers (S3Source)."""

from __future__ import annotations

import collections
import dataclasses
import http.client
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from export_processor.errors import CancelledError, ExportError, TransientError
from export_processor.locations import Location
from export_processor.s3client import (
    ROUND_BACKOFF,
    S3Client,
    head_source,
    pinned,
    translate,
    with_rounds,
)
from export_processor.settings import KEPT_DOWNLOAD_BUFFERS
from export_processor.source import ByteSource, SourcePin

BODY_READS = 5
"""Times one range is requested when its body keeps ending early (a connection reset mid-body,
fewer bytes than Content-Length): botocore retries a request, not the reading of its body."""


class _Owner:
    """Stands for one download buffer inside Arrow: the buffer goes back to its pool when the
    last Arrow buffer (or memoryview of one) over it is gone."""


class DownloadBuffers:
    """Buffers for ranged GETs, reused once nothing refers to their bytes any more.

    A GET's body read into a fresh 4 MiB `bytes` took a page fault per 4 KiB (docs/benchmarks.md).
    Here a body is read into a buffer of the pool, and handed on as an Arrow buffer whose owner
    (`_Owner`) returns it to the pool when Arrow, the parser and this module have all let go of
    it: a buffer is never written while a view of it is alive. At most `KEPT_DOWNLOAD_BUFFERS`
    free buffers are kept (the next GET takes one at once); one freed beyond that goes back to
    the system, so the pool adds that many buffers to the memory the GETs and parser blocks hold
    anyway (settings, `memory_bound()`): keeping all of them took a Parquet export of 3 GB to
    293 MiB.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        self.allocated = 0
        """Buffers created (the pool's size; for tests)."""

    def take(self, size: int) -> bytearray:
        """A buffer of `size` bytes: a free one of the pool's size, else a new one."""
        if size == self.size:
            with self._lock:
                if self._free:
                    return self._free.pop()
                self.allocated += 1
        return bytearray(size)

    def _give_back(self, buffer: bytearray) -> None:
        if len(buffer) == self.size:
            with self._lock:
                if len(self._free) < KEPT_DOWNLOAD_BUFFERS:
                    self._free.append(buffer)

    def hand_out(self, buffer: bytearray) -> pa.Buffer:
        """`buffer` as a read-only Arrow buffer; `buffer` returns to the pool once that buffer,
        its slices and every view of them are gone."""
        owner = _Owner()
        # The address, through a view that ends here: the bytearray is never resized.
        address = pa.py_buffer(buffer).address
        weakref.finalize(owner, self._give_back, buffer)
        return pa.foreign_buffer(address, len(buffer), base=owner)


class BodyCutError(Exception):
    """A GET's body ended in an error after `got` bytes (a reset, a timeout)."""

    def __init__(self, got: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause} after {got} bytes")
        self.got = got


def read_body_into(body: Any, target: memoryview) -> int:
    """Read an S3 GET's body into `target`; returns the bytes read (fewer: the body was short).

    Straight into `target` through the HTTP response under botocore's StreamingBody (urllib3's
    `_fp`, http.client's response, whose `readinto` fills the buffer from the socket): botocore
    and urllib3 only offer `read()`, which returns new bytes. The connection goes back to the
    pool only after the whole body was read. A body of another kind (tests' fakes) is read and
    copied.

    Raises:
        BodyCutError: the connection failed mid-body (the bytes read so far in `got`).
    """
    raw = getattr(body, "_raw_stream", None)
    response = getattr(raw, "_fp", None)
    if raw is None or not hasattr(response, "readinto"):
        try:
            data = body.read()
        except Exception as exc:
            raise BodyCutError(0, exc) from exc
        size = min(len(data), len(target))
        target[:size] = data[:size]
        return len(data)
    assert response is not None
    got = 0
    try:
        while got < len(target):
            count = response.readinto(target[got:])
            if not count:
                break
            got += count
    except (OSError, http.client.HTTPException) as exc:
        raw.close()
        raise BodyCutError(got, exc) from exc
    except BaseException:
        raw.close()
        raise
    if got == len(target):
        raw.release_conn()
    else:
        raw.close()
    return got


@dataclasses.dataclass(frozen=True)
class S3Read:
    """What an S3Source reads: `location` from byte `start` to `stop`, pinned to `pin`'s version
    and ETag (either may be None), in GETs of `chunk_size` bytes, `read_ahead` in flight."""

    client: S3Client
    location: Location
    pin: SourcePin
    chunk_size: int
    read_ahead: int
    start: int = 0
    stop: int | None = None

    def get_args(self, start: int, end: int) -> dict[str, str]:
        """A GET of bytes `start` to `end` (inclusive) of the version pinned."""
        return pinned(self.location, self.pin) | {"Range": f"bytes={start}-{end}"}


class Downloads:
    """The ranged GETs of an S3Source up to byte `size`, `read.read_ahead` of them in flight
    on a pool of threads, handed out in order (`next`)."""

    def __init__(self, read: S3Read, size: int, cancelled: threading.Event) -> None:
        self.read = read
        self._cancelled = cancelled
        self._next_offset = read.start
        self._limit = size if read.stop is None else min(read.stop, size)
        self._pending: collections.deque[Future[tuple[pa.Buffer, bytearray]]] = collections.deque()
        self.buffers = DownloadBuffers(read.chunk_size)
        self.again = 0
        """Bytes received and thrown away because their download was cut: read twice."""
        self._again_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=read.read_ahead, thread_name_prefix="s3-read")
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self.read.read_ahead and self._next_offset < self._limit:
            start = self._next_offset
            end = min(start + self.read.chunk_size, self._limit) - 1
            self._pending.append(self._pool.submit(self._get_range, start, end))
            self._next_offset = end + 1

    def _get_range(self, start: int, end: int) -> tuple[pa.Buffer, bytearray]:
        if self._cancelled.is_set():
            raise CancelledError("cancelled")
        read = self.read
        args = read.get_args(start, end)
        what = f"reading {read.location.uri} bytes {start}-{end}"
        size = end - start + 1
        buffer = self.buffers.take(size)
        cut = ""
        for reads in range(1, BODY_READS + 1):
            response = with_rounds(
                lambda: read.client.get_object(**args),  # type: ignore[arg-type]
                what=what,
                missing_is_source=True,
                cancelled=self._cancelled,
            )
            try:
                got = read_body_into(response["Body"], memoryview(buffer))
                if got == size:
                    return self.buffers.hand_out(buffer), buffer
                cut = f"the body ended after {got} bytes"
            except BodyCutError as exc:
                got, cut = exc.got, str(exc)
            # Read again from the range's start: its bytes so far are read twice.
            with self._again_lock:
                self.again += got
            if reads < BODY_READS and self._cancelled.wait(ROUND_BACKOFF.delay(reads)):
                raise CancelledError("cancelled")
        raise TransientError(f"{what}: cut {BODY_READS} times; last: {cut}")

    def next(self) -> tuple[pa.Buffer, bytearray] | None:
        """The next download (an Arrow buffer and the bytearray under it); None: no more."""
        if not self._pending:
            return None
        data = self._pending.popleft().result()
        self._fill()
        return data

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


class S3Source(ByteSource):
    """An S3 object read as consecutive ranged GETs, `read_ahead` of them in flight.

    Every range is pinned to the version given (and the ETag given, else the one seen at start:
    `If-Match`), so an object overwritten mid-read fails the export (SOURCE_CHANGED) instead of
    mixing two versions. `pin` is what was pinned, with the version id seen (not used here).
    """

    def __init__(self, read: S3Read) -> None:
        super().__init__()
        self.size, self.pin = head_source(
            read.client, read.location, pin=read.pin, cancelled=self._cancelled
        )
        # Every GET in the version given, with the ETag seen (If-Match) when none was given.
        read = dataclasses.replace(read, pin=SourcePin(self.pin.etag, read.pin.version_id))
        self._downloads = Downloads(read, self.size, self._cancelled)
        self._chunk: bytes | pa.Buffer = b""
        self._array = bytearray()
        """The download buffer under `_chunk` (quotes are counted in it without a copy)."""
        self._position = 0
        """The current download and how much of it was read."""

    @property
    def bytes_again(self) -> int:
        return self._downloads.again

    def _next_chunk(self) -> bool:
        try:
            data = self._downloads.next()
        except ExportError as exc:
            raise self._fail(exc) from exc
        except Exception as exc:
            uri = self._downloads.read.location.uri
            raise self._fail(TransientError(f"reading {uri}: {exc}")) from exc
        if data is None:
            return False
        (self._chunk, self._array), self._position = data, 0
        return True

    def read(self, size: int = -1) -> bytes | memoryview:
        """Up to `size` bytes; within one download a memoryview of it (the parser reads blocks
        of half a download: copying them cost a copy of the input and its page faults)."""
        self._check_cancelled()
        self._ahead.wait_for_room()
        wanted = size if size >= 0 else 1 << 62
        parts: list[memoryview] = []
        got = 0
        while got < wanted:
            if self._position == len(self._chunk) and not self._next_chunk():
                break
            self._check_cancelled()
            chunk, start = self._chunk, self._position
            end = min(len(chunk), start + wanted - got)
            parts.append(memoryview(chunk)[start:end])
            if self.quotes is not None:
                self.quotes.count += self._array.count(self.quotes.byte, start, end)
            self._position = end
            got += end - start
        self.bytes_read += got
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def reopen(self) -> S3Source:
        return S3Source(self._downloads.read)

    def read_at(self, offset: int, size: int) -> bytes:
        assert self.size is not None
        end = min(offset + size, self.size) - 1
        if end < offset:
            return b""
        read = self._downloads.read
        args = read.get_args(offset, end)
        try:
            return bytes(read.client.get_object(**args)["Body"].read())  # type: ignore[arg-type]
        except Exception as exc:
            raise self._fail(translate(exc, what=f"reading {read.location.uri}")) from exc

    def close(self) -> None:
        self._cancelled.set()
        self._downloads.close()
        super().close()
