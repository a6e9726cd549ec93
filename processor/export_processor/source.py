"""Readable byte streams over the input: the stream the parser reads (ByteSource) and local files
(FileSource); S3 objects read by prefetched ranges are in s3_source.py.

Each counts the bytes handed to the parser (for progress), stops promptly when cancelled, and
keeps the exception it raised, so the converter can tell an I/O failure from a CSV error after it
crossed pyarrow.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from export_processor.errors import (
    CancelledError,
    ExportError,
    SourceMissingError,
    TransientError,
)

if TYPE_CHECKING:
    from export_processor.settings import ProcessorSettings

_MAX_THROTTLE_WAIT = 60.0
"""Seconds a read waits for the writer before going ahead anyway: a safety net against a
miscount, far longer than any batch takes (a short one let a CPU-starved writer fall far behind
the reader: docs/processor.md, "Memory")."""

_OPENING_THROTTLE_WAIT = 1.0
"""The same before the writer took its first batch. pyarrow's `open_csv` reads ahead while it
looks for the first rows, and when it then fails (a row longer than two blocks) it waits for that
read before raising: a read held for room the writer would never make stalled a BAD_CSV export
for 60 s."""


@dataclass(frozen=True)
class SourcePin:
    """The one version of the source every read of an export is pinned to: its ETag (each GET
    carries `If-Match`) and, in a versioned bucket, its version id. A split export pins it once
    (`--prepare-ranges`) and gives it to every range and the finishing step."""

    etag: str | None = None
    version_id: str | None = None

    def as_json(self) -> dict[str, str]:
        pinned = (("etag", self.etag), ("versionId", self.version_id))
        return {name: value for name, value in pinned if value}

    @property
    def identity(self) -> str:
        """What tells two versions apart (in a split export's plan digest)."""
        return f"{self.version_id or ''}/{self.etag or ''}"

    def applied(self, settings: ProcessorSettings) -> ProcessorSettings:
        """`settings` reading this version (`EXPORTJOBS_SOURCE_ETAG`, `..._VERSION_ID`)."""
        if (settings.source_etag, settings.source_version_id) == (self.etag, self.version_id):
            return settings
        return settings.model_copy(
            update={"source_etag": self.etag, "source_version_id": self.version_id}
        )


@dataclass(slots=True)
class Tally:
    """How many times `byte` occurs in the bytes read so far."""

    byte: bytes
    count: int = 0


class ReadAhead:
    """How far `read()` may run ahead of `consumed()` (ByteSource.limit_read_ahead): reads wait
    for room, at most a capped time, and never once cancelled."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.limit: int | None = None
        self._cancelled = cancelled
        self._room = threading.Condition()
        self._reads = 0
        self._consumed = 0

    def consumed(self) -> None:
        with self._room:
            self._consumed += 1
            self._room.notify_all()

    def wait_for_room(self) -> None:
        if self.limit is None:
            return
        limit = self.limit
        with self._room:
            self._room.wait_for(
                lambda: self._reads - self._consumed < limit or self._cancelled.is_set(),
                timeout=_MAX_THROTTLE_WAIT if self._consumed else _OPENING_THROTTLE_WAIT,
            )
            self._reads += 1

    def wake(self) -> None:
        with self._room:
            self._room.notify_all()


class ByteSource(io.RawIOBase):
    """A forward-only stream: `read(n)` returns up to n bytes (bytes, or a read-only memoryview
    over a larger download: no copy), b'' at the end."""

    size: int | None = None
    """Total bytes when known (regular files, S3 objects); None for pipes."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0
        self.error: ExportError | None = None
        self.quotes: Tally | None = None
        """Counts the quote in what `read()` returns: set by a range of a split export
        (range_bounds.RangeSource), which needs the quotes' parity at its end."""
        self._cancelled = threading.Event()
        self._ahead = ReadAhead(self._cancelled)

    @property
    def bytes_again(self) -> int:
        """Bytes received and thrown away because their download was cut: read twice."""
        return 0

    @property
    def bytes_fetched(self) -> int:
        """Every byte read from the input: the bytes handed on and those read again."""
        return self.bytes_read + self.bytes_again

    def limit_read_ahead(self, blocks: int) -> None:
        """Let `read()` run at most `blocks` calls ahead of `consumed()` calls.

        pyarrow's streaming CSV reader reads up to 32 blocks ahead of the batches taken from
        it; with large blocks that is hundreds of MiB. Each read is one parser block and each
        block one batch, so counting both bounds the blocks in memory. The wait is capped, so
        a miscount costs a short stall, never a deadlock.
        """
        self._ahead.limit = blocks

    def consumed(self) -> None:
        """One batch was taken by the writer: allow one more read."""
        self._ahead.consumed()

    def readable(self) -> bool:
        return True

    def cancel(self) -> None:
        """Make every later read raise CancelledError (used on SIGTERM and on abandon)."""
        self._cancelled.set()
        self._ahead.wake()

    def _fail(self, error: ExportError) -> ExportError:
        self.error = error
        return error

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise self._fail(CancelledError("cancelled while reading the source"))

    def reopen(self) -> ByteSource:
        """A fresh stream over the same bytes from the start (for a restarted conversion)."""
        raise NotImplementedError

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`, apart from the stream (a split export's range looks
        for its first row boundary with it)."""
        raise NotImplementedError

    def count_newlines(self) -> int | None:
        """The line feeds of the whole input, only to name the line of a parse error found at
        its end: read again from the start (not counted while converting, where it cost 3-4% of
        the CPU). None when unknown."""
        try:
            again = self.reopen()
        except ExportError:
            return None
        try:
            count = 0
            while chunk := again.read(8 << 20):
                count += bytes(chunk).count(b"\n")
            return count
        except ExportError:
            return None
        finally:
            again.close()


class FileSource(ByteSource):
    """A local file or pipe."""

    def __init__(self, path: str, *, start: int = 0, stop: int | None = None) -> None:
        super().__init__()
        self.path = path
        self._start, self._stop = start, stop
        self.newlines = 0
        """Line feeds in the bytes read so far, counted only in a pipe (it cannot be read
        again: `count_newlines`)."""
        self._io = threading.Lock()
        """Held around each read of the file and its close (see `close`)."""
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise SourceMissingError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise SourceMissingError(f"not a file: {path}") from None
        except OSError as exc:
            raise TransientError(f"cannot open {path}: {exc}") from exc
        info = os.fstat(self._file.fileno())
        self.size = info.st_size if stat.S_ISREG(info.st_mode) else None
        if start:
            self._file.seek(start)

    def read(self, size: int = -1) -> bytes:
        self._check_cancelled()
        self._ahead.wait_for_room()
        chunks: list[bytes] = []
        left = 1 << 62 if self._stop is None else self._stop - self._start - self.bytes_read
        wanted = min(size if size >= 0 else 1 << 62, left)
        got = 0
        # Pipes return short reads; fill the request so the parser sees full blocks.
        while got < wanted:
            try:
                with self._io:
                    if self._file.closed:
                        raise self._fail(CancelledError(f"{self.path} was closed"))
                    chunk = self._file.read(min(wanted - got, 16 << 20))
            except OSError as exc:
                raise self._fail(TransientError(f"reading {self.path}: {exc}")) from exc
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            self._check_cancelled()
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.bytes_read += got
        if self.quotes is not None:
            self.quotes.count += data.count(self.quotes.byte)
        if self.size is None:  # a pipe: read once, so counted now
            self.newlines += data.count(b"\n")
        return data

    def reopen(self) -> FileSource:
        if self.size is None:
            raise TransientError(f"{self.path} is not a regular file and cannot be re-read")
        return FileSource(self.path, start=self._start, stop=self._stop)

    def read_at(self, offset: int, size: int) -> bytes:
        try:
            with self._io:
                return os.pread(self._file.fileno(), size, offset)
        except OSError as exc:
            raise self._fail(TransientError(f"reading {self.path}: {exc}")) from exc

    def count_newlines(self) -> int | None:
        if self.size is None:
            return self.newlines
        return super().count_newlines()

    def close(self) -> None:
        # Not while a read is in the file (a reader left behind, an abandoned parser's read-ahead):
        # its descriptor, closed, could be reused by the next open and that read would take
        # bytes from another stream. A read blocked on a pipe does not hold the close for ever.
        locked = self._io.acquire(timeout=5)
        try:
            self._file.close()
        finally:
            if locked:
                self._io.release()
        super().close()
