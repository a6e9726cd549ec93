"""The finishing step's object work: compose the ranges' part objects into one object server-side,
write a Parquet dataset's manifest, and remove parts.

An S3 multipart upload whose parts are copies of the part objects (UploadPartCopy: S3 copies the
bytes, nothing is downloaded). S3 wants every part but the last to be at least 5 MiB: a part
object smaller than that is joined with the bytes after it, downloaded (at most 5 MiB per small
part: only small ranges cost a download). A copy is at most 5 GiB, so larger parts are copied
in pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from export_processor.errors import TransientError
from export_processor.locations import Location
from export_processor.range_sink import edge_locations, parts_per_range
from export_processor.s3client import S3Client, translate
from export_processor.settings import S3_MIN_PART_SIZE
from export_processor.sink import S3_MAX_PART_SIZE

MAX_COPY_PART = S3_MAX_PART_SIZE
JOIN_THREADS = 2
"""Edge parts joined at once by the finishing step (each at most two parts' worth in memory)."""


@dataclass(frozen=True)
class Piece:
    """One part object and its size."""

    location: Location
    size: int


def tree_sha256(digests: list[str]) -> str:
    """The checksum of a composed output: sha256 over the parts' sha256 digests (raw bytes), in
    order. A client checks it by hashing the object in runs of the result's `partBytes`."""
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


def copy_plan(
    sizes: list[int], *, minimum: int = S3_MIN_PART_SIZE, maximum: int = MAX_COPY_PART
) -> list[list[tuple[int, int, int, bool]]]:
    """The parts of the composed upload: each a list of (piece, first byte, end byte, copy),
    where `copy` is a server-side copy (the part's only run) and the others are downloaded and
    uploaded together. Every part but the last holds at least `minimum` bytes, none more than
    `maximum`."""
    parts: list[list[tuple[int, int, int, bool]]] = []
    gathered: list[tuple[int, int, int, bool]] = []
    gathered_size = 0
    total = sum(sizes)
    done = 0
    for index, size in enumerate(sizes):
        position = 0
        while position < size:
            left = size - position
            if gathered:
                take = min(minimum - gathered_size, left)
                gathered.append((index, position, position + take, False))
                gathered_size += take
                position += take
                done += take
                if gathered_size >= minimum or done == total:
                    parts.append(gathered)
                    gathered, gathered_size = [], 0
                continue
            if left >= minimum or done + left == total:
                take = min(left, maximum)
                if 0 < left - take < minimum:
                    take = left - minimum  # the rest stays a valid part
                parts.append([(index, position, position + take, True)])
                position += take
                done += take
                continue
            gathered.append((index, position, size, False))
            gathered_size += left
            done += left
            position = size
    if gathered:
        parts.append(gathered)
    return parts


def _get(client: S3Client, location: Location, start: int, end: int) -> bytes:
    response = client.get_object(
        Bucket=location.bucket, Key=location.key, Range=f"bytes={start}-{end - 1}"
    )
    return bytes(response["Body"].read())


def compose(client: S3Client | None, pieces: list[Piece], target: Location) -> int:
    """Make `target` the concatenation of `pieces`; returns its size. Nothing is visible before
    the end; on failure the upload is aborted."""
    if not target.is_s3:
        return _compose_files(pieces, target)
    assert client is not None
    what = f"composing {target.uri}"
    pieces = [p for p in pieces if p.size]
    try:
        upload = client.create_multipart_upload(Bucket=target.bucket, Key=target.key)
    except Exception as exc:
        raise translate(exc, what=what) from exc
    upload_id = upload["UploadId"]
    try:
        done: list[dict[str, Any]] = []
        plan = copy_plan([p.size for p in pieces]) or [[]]
        for number, runs in enumerate(plan, start=1):
            done.append(_part(client, pieces, target, upload_id, number, runs))
        client.complete_multipart_upload(
            Bucket=target.bucket,
            Key=target.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
        )
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=target.bucket, Key=target.key, UploadId=upload_id)
        if isinstance(exc, Exception):
            raise translate(exc, what=what) from exc
        raise
    return sum(p.size for p in pieces)


def _part(
    client: S3Client,
    pieces: list[Piece],
    target: Location,
    upload_id: str,
    number: int,
    runs: list[tuple[int, int, int, bool]],
) -> dict[str, Any]:
    common: dict[str, Any] = {
        "Bucket": target.bucket,
        "Key": target.key,
        "UploadId": upload_id,
        "PartNumber": number,
    }
    if len(runs) == 1 and runs[0][3]:
        index, start, end, _ = runs[0]
        source = pieces[index].location
        copied = client.upload_part_copy(
            **common,
            CopySource={"Bucket": source.bucket, "Key": source.key},
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
        return {"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]}
    body = b"".join(_get(client, pieces[i].location, start, end) for i, start, end, _ in runs)
    uploaded = client.upload_part(**common, Body=body)
    return {"PartNumber": number, "ETag": uploaded["ETag"]}


def _compose_files(pieces: list[Piece], target: Location) -> int:
    directory = os.path.dirname(target.key) or "/"
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(target.key)}.{os.getpid()}.partial")
    total = 0
    try:
        with open(temporary, "wb") as out:
            for piece in pieces:
                with open(piece.location.key, "rb") as part:
                    shutil.copyfileobj(part, out, 8 << 20)
                total += piece.size
        os.replace(temporary, target.key)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return total


def remove(client: S3Client | None, locations: list[Location], *, uploads_under: Location) -> None:
    """Delete `locations` (missing ones are fine) and abort every multipart upload still open
    under the prefix `uploads_under` (a range killed without its abort leaves one). Never
    raises: the caller is cleaning up."""
    if not uploads_under.is_s3:
        for location in locations:
            with contextlib.suppress(OSError):
                os.unlink(location.key)
        with contextlib.suppress(OSError):
            os.rmdir(uploads_under.key)
        return
    assert client is not None
    with contextlib.suppress(Exception):
        for start in range(0, len(locations), 1000):
            batch = locations[start : start + 1000]
            client.delete_objects(
                Bucket=uploads_under.bucket,
                Delete={"Objects": [{"Key": loc.key} for loc in batch], "Quiet": True},
            )
    # The prefix finds every upload under it on AWS; MinIO lists only an object's own uploads,
    # so each known key is asked too.
    for prefix in [uploads_under.key, *(loc.key for loc in locations)]:
        with contextlib.suppress(Exception):
            listed = client.list_multipart_uploads(Bucket=uploads_under.bucket, Prefix=prefix)
            for upload in listed.get("Uploads", []):
                with contextlib.suppress(Exception):
                    client.abort_multipart_upload(
                        Bucket=uploads_under.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )


def _listed_parts(client: S3Client, target: Location, upload_id: str) -> dict[int, tuple[str, int]]:
    """The upload's parts: number -> (ETag, size)."""
    parts: dict[int, tuple[str, int]] = {}
    marker = 0
    while True:
        page = client.list_parts(
            Bucket=target.bucket, Key=target.key, UploadId=upload_id, PartNumberMarker=marker
        )
        for part in page.get("Parts", []):
            parts[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
        if not page.get("IsTruncated"):
            return parts
        marker = int(page["NextPartNumberMarker"])


def complete_ranges(
    client: S3Client,
    target: Location,
    upload_id: str,
    count: int,
    shares: list[dict[str, int]],
    total: int,
) -> None:
    """Complete the export's upload from the ranges' shares (range_sink.py): each range's
    parts as they are, and between them one part of the edges (the tail before, the head
    after: downloaded and uploaded, JOIN_THREADS joins at once). Checks that the parts used add
    up to `total` bytes."""
    share_size = parts_per_range(count)
    last_number = count * share_size + 1
    listed = _listed_parts(client, target, upload_id)
    parts: list[dict[str, Any]] = []
    joins: list[tuple[int, list[tuple[Location, int]]]] = []
    edges: list[tuple[Location, int]] = []
    used = 0

    def own(number: int) -> None:
        nonlocal used
        if number not in listed:
            raise TransientError(f"composing {target.uri}: part {number} is missing")
        etag, size = listed[number]
        parts.append({"PartNumber": number, "ETag": etag})
        used += size

    def join(number: int) -> None:
        # The edges gathered so far, as part `number` (nothing when they are empty, unless
        # the output has no other part: an empty object is one empty part).
        if any(size for _, size in edges) or (number == last_number and not parts and not joins):
            joins.append((number, [(where, size) for where, size in edges if size]))
        edges.clear()

    for index, share in enumerate(shares):
        head, tail = edge_locations(target, index)
        edges.append((head, share["head"]))
        if share["last"] >= share["first"]:
            join(index * share_size + 1)
            for number in range(share["first"], share["last"] + 1):
                own(number)
        edges.append((tail, share["tail"]))
    join(last_number)
    if shares and shares[-1].get("tailPart"):
        own(shares[-1]["tailPart"])

    def upload(job: tuple[int, list[tuple[Location, int]]]) -> tuple[dict[str, Any], int]:
        number, pieces = job
        body = b"".join(_get(client, where, 0, size) for where, size in pieces)
        uploaded = client.upload_part(
            Bucket=target.bucket, Key=target.key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": uploaded["ETag"]}, len(body)

    with ThreadPoolExecutor(max_workers=JOIN_THREADS, thread_name_prefix="s3-join") as pool:
        for part, size in pool.map(upload, joins):
            parts.append(part)
            used += size
    if used != total:
        raise TransientError(f"composing {target.uri}: the parts hold {used} bytes, not {total}")
    ordered: Any = sorted(parts, key=lambda p: int(p["PartNumber"]))
    client.complete_multipart_upload(
        Bucket=target.bucket, Key=target.key, UploadId=upload_id, MultipartUpload={"Parts": ordered}
    )
