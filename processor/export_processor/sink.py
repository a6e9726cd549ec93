"""Output streams: a local file (renamed into place) or an S3 multipart upload.

Both hash what they receive (sha256) and make the output visible only on `commit()`: a failed,
cancelled or restarted export calls `abort()`, which deletes the temporary file or aborts the
multipart upload, so no partial object is ever visible.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from export_processor.errors import ExportError, TransientError
from export_processor.locations import Location
from export_processor.s3client import S3Client, error_code, with_rounds

S3_MAX_PARTS = 10_000
S3_MAX_PART_SIZE = 5 * 1024**3
PART_SIZE_DOUBLING_EVERY = 1000


@dataclass(frozen=True, slots=True)
class SinkResult:
    uri: str
    bytes: int
    sha256: str


def part_size_for(part_number: int, *, base: int, every: int = PART_SIZE_DOUBLING_EVERY) -> int:
    """The size of part `part_number` (1-based): `base`, doubled every 1000 parts.

    With an 8 MiB base the first 1000 parts hold 8 GiB, 2000 parts 24 GiB, 4000 parts 120 GiB,
    and 10000 parts far more than S3's 5 TiB object limit, so no output runs out of parts.
    """
    return min(base << ((part_number - 1) // every), S3_MAX_PART_SIZE)


class Sink(io.RawIOBase):
    """A write-only stream that hashes and counts what it is given."""

    def __init__(self, location: Location) -> None:
        super().__init__()
        self.location = location
        self.bytes_written = 0
        self._sha256 = hashlib.sha256()
        self._discarding = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self._discarding:
            return size  # a writer flushing into an aborted output
        if size:
            self._sha256.update(view)
            self.bytes_written += size
            self._write(view)
        return size

    def _write(self, view: memoryview) -> None:
        raise NotImplementedError

    def commit(self) -> SinkResult:
        """Make the output visible and return what was written."""
        self._commit()
        return SinkResult(self.location.uri, self.bytes_written, self._sha256.hexdigest())

    def _commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Discard everything written; never raises."""
        raise NotImplementedError

    def close(self) -> None:
        # pyarrow closes the stream it was given; committing is explicit, so closing is a no-op.
        pass


class FileSink(Sink):
    """A local file written under a temporary name and renamed into place on commit."""

    def __init__(self, location: Location) -> None:
        super().__init__(location)
        directory = os.path.dirname(location.key) or "/"
        os.makedirs(directory, exist_ok=True)
        self._temp = os.path.join(
            directory, f".{os.path.basename(location.key)}.{os.getpid()}.partial"
        )
        self._file = open(self._temp, "wb")  # noqa: SIM115 - closed by commit/abort

    def _write(self, view: memoryview) -> None:
        self._file.write(view)

    def _commit(self) -> None:
        self._file.close()
        os.replace(self._temp, self.location.key)

    def abort(self) -> None:
        self._discarding = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


class PartBuffers:
    """The part being filled (`part`, `filled` bytes of it), its size doubled every
    `doubling_every` parts, in buffers reused once their part is uploaded: the output is copied
    once, into memory already mapped (a fresh buffer per part cost two copies of the output and
    a page fault per 4 KiB)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.doubling_every = PART_SIZE_DOUBLING_EVERY
        self.part: bytearray | None = None
        self.filled = 0
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def new(self, number: int) -> bytearray:
        """An empty part to fill, the size of part `number`."""
        size = part_size_for(number, base=self.base, every=self.doubling_every)
        with self._lock:
            while self._free:
                part = self._free.pop()
                if len(part) == size:
                    self.part = part
                    return part
        self.part = bytearray(size)
        return self.part

    def release(self, body: bytes | bytearray) -> None:
        """`body` was sent: its buffer is free."""
        if isinstance(body, bytearray):
            with self._lock:
                self._free.append(body)

    def take(self) -> bytes | bytearray:
        """The bytes filled so far; the next write starts a new part. A full part goes as it is
        (botocore takes bytes or bytearray, not a memoryview); a partial one, the last, is
        copied."""
        part, filled = self.part, self.filled
        self.part, self.filled = None, 0
        if part is None:
            return b""
        if filled == len(part):
            return part
        return bytes(memoryview(part)[:filled])

    def drop(self) -> None:
        self.part, self._free = None, []


class PartUploads:
    """The parts of one multipart upload being uploaded: at most `concurrency` at once (adding
    one waits for a free slot), the first error, and the stop an abort gives."""

    def __init__(self, concurrency: int) -> None:
        self.id: str | None = None
        """None until CreateMultipartUpload is sent, "" until its answer (a signal may stop us
        in between, the upload made on S3), then its id."""
        self._slots = threading.BoundedSemaphore(concurrency)
        self._futures: list[Future[dict[str, Any]]] = []
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-upload")
        self.failed: ExportError | None = None
        self.stopped = threading.Event()
        """Set by `stop()`: a part waiting for its next round gives up."""

    def add(self, upload: Callable[[], dict[str, Any]]) -> None:
        """Upload a part (`upload()` returns its number and ETag)."""
        self._slots.acquire()  # back-pressure: wait for a free upload slot
        future = self._pool.submit(upload)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def results(self, what: str) -> list[dict[str, Any]]:
        """Each part's number and ETag, once all are uploaded; else the first error."""
        parts = []
        for future in self._futures:
            try:
                parts.append(future.result())
            except ExportError:
                raise
            except Exception as exc:
                raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
        self._pool.shutdown(wait=False)
        return parts

    def stop(self) -> None:
        """Give up; let the parts in flight finish first: one completing after an abort would
        otherwise keep (part of) the upload alive."""
        self.stopped.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class S3MultipartSink(Sink):
    """An S3 object uploaded in parts by a small pool; small outputs use one PutObject.

    Memory holds at most `concurrency` parts being uploaded plus the one being filled: writing
    blocks while the uploads are behind, which slows the parser instead of growing memory.
    Those part buffers are reused once uploaded (PartBuffers).
    """

    def __init__(
        self, *, client: S3Client, location: Location, part_size: int, concurrency: int
    ) -> None:
        super().__init__(location)
        self._client = client
        self._parts = PartBuffers(part_size)
        self._upload = PartUploads(concurrency)
        self._part_number = 0

    def _what(self) -> str:
        return f"uploading {self.location.uri}"

    def _write(self, view: memoryview) -> None:
        parts = self._parts
        while view:
            part = parts.part
            if part is None:
                part = parts.new(self._part_number + 1)
            filled = parts.filled
            take = min(len(view), len(part) - filled)
            # Through a memoryview: bytearray slice assignment copies a memoryview twice.
            memoryview(part)[filled : filled + take] = view[:take]
            parts.filled = filled + take
            view = view[take:]
            if parts.filled == len(part):
                self._flush_part()

    def _flush_part(self) -> None:
        upload = self._upload
        if upload.failed is not None:
            raise upload.failed
        if upload.id is None:
            upload.id = ""  # sent: from here an abort looks for it on S3
            created = with_rounds(
                lambda: self._client.create_multipart_upload(
                    Bucket=self.location.bucket, Key=self.location.key
                ),
                what=self._what(),
            )
            upload.id = created["UploadId"]
        self._part_number += 1
        if self._part_number > S3_MAX_PARTS:
            raise TransientError(f"{self._what()}: more than {S3_MAX_PARTS} parts")
        upload.add(functools.partial(self._upload_part, self._part_number, self._parts.take()))

    def _upload_part(self, number: int, body: bytes | bytearray) -> dict[str, Any]:
        upload = self._upload
        if self._discarding:
            raise TransientError("upload aborted")
        try:
            response = with_rounds(
                lambda: self._client.upload_part(
                    Bucket=self.location.bucket,
                    Key=self.location.key,
                    UploadId=upload.id or "",
                    PartNumber=number,
                    Body=cast(bytes, body),  # botocore takes a bytearray too; its stubs say bytes
                ),
                what=f"{self._what()} (part {number})",
                cancelled=upload.stopped,
            )
        except ExportError as error:
            upload.failed = upload.failed or error
            raise
        finally:
            self._parts.release(body)
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _commit(self) -> None:
        if self._upload.id is None:
            body = bytes(self._parts.take())  # a partial part: bytes already, no copy
            with_rounds(
                lambda: self._client.put_object(
                    Bucket=self.location.bucket, Key=self.location.key, Body=body
                ),
                what=self._what(),
            )
            return
        if self._parts.filled or self._part_number == 0:
            self._flush_part()
        parts = self._upload.results(self._what())
        with_rounds(lambda: self._complete(parts), what=self._what())
        self._abort_uploads_except(self._upload.id)

    def _complete(self, parts: list[dict[str, Any]]) -> None:
        """CompleteMultipartUpload, once more if need be: a request answered with an error (a
        500, a reset) may still have completed the upload, and the next one then finds no such
        upload. The object is then there, with the ETag of exactly these parts: done."""
        upload_id = self._upload.id
        assert upload_id is not None
        try:
            self._client.complete_multipart_upload(
                Bucket=self.location.bucket,
                Key=self.location.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except Exception as exc:
            if error_code(exc) == "NoSuchUpload" and self._stored_etag() == multipart_etag(parts):
                return
            raise

    def _stored_etag(self) -> str | None:
        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=self.location.key)
        except Exception:
            return None
        return str(head.get("ETag", "")).strip('"') or None

    def _abort_uploads_except(self, keep: str | None) -> None:
        """Abort the multipart uploads of this key but `keep`: those an earlier attempt left (its
        abort failed while S3 was down), or, on abort, the one whose creation a signal cut
        short. The key is this export's alone. Best effort: without
        s3:ListBucketMultipartUploads the bucket's lifecycle rule for incomplete uploads remains
        the safety net."""
        bucket, key = self.location.bucket, self.location.key
        try:
            listed = self._client.list_multipart_uploads(Bucket=bucket, Prefix=key)
            for upload in listed.get("Uploads", []):
                if upload.get("Key") == key and upload.get("UploadId") not in (None, keep):
                    self._client.abort_multipart_upload(
                        Bucket=bucket, Key=key, UploadId=str(upload["UploadId"])
                    )
        except Exception:  # noqa: S110 - best effort, see above
            pass

    def _stop(self) -> None:
        self._discarding = True
        self._parts.drop()
        self._upload.stop()

    def abort(self) -> None:
        self._stop()
        upload_id = self._upload.id
        if not upload_id:
            if upload_id == "":  # made on S3 perhaps, its id never received
                self._abort_uploads_except(None)
            return
        for _ in range(3):
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.location.bucket, Key=self.location.key, UploadId=upload_id
                )
                return
            except Exception as exc:
                if "NoSuchUpload" in str(exc):
                    return


def multipart_etag(parts: list[dict[str, Any]]) -> str:
    """The ETag S3 gives the object of a completed multipart upload: the MD5 of the parts' MD5s
    (their ETags), a dash and the number of parts."""
    digests = b"".join(bytes.fromhex(str(part["ETag"]).strip('"')) for part in parts)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


def open_sink(
    *, location: Location, client: S3Client | None, part_size: int, concurrency: int
) -> Sink:
    """Open the output for writing (nothing is visible before `commit()`)."""
    if not location.is_s3:
        return FileSink(location)
    assert client is not None
    return S3MultipartSink(
        client=client, location=location, part_size=part_size, concurrency=concurrency
    )
