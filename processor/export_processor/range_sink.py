"""A range's output straight into the export's own multipart upload (no copy afterwards).

When the export's upload was opened before the ranges started (`--prepare-ranges`), range i
uploads its full parts into it, numbered from `i * K + 2` (K = `parts_per_range(count)`), and
keeps its edges as small objects: its first part (`<output>.parts/NNNNN.head`) and what is left
after its last full part (`.tail`). S3 wants every part but the last to be at least 5 MiB; a
range's last bytes are usually fewer, so the finishing step joins each range's tail with the
next range's head (downloaded, at most two parts' worth per range) into the part numbered just
before that range's parts, and completes the upload: the bulk of the output is never copied.
The outer edges need no joining, so they are parts at once: the first range's first part is
part 1, and the last range's tail, once it has parts of its own, is the upload's last part
(`count * K + 1`). With two ranges the finishing step then moves one tail and one head.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from export_processor.errors import TransientError
from export_processor.locations import Location
from export_processor.s3client import S3Client, translate
from export_processor.sink import S3_MAX_PARTS, S3MultipartSink


def open_upload(client: S3Client | None, output: Location, export_format: str) -> str | None:
    """Open the export's upload for the ranges to write into, before they start (csv, csv.gz,
    jsonl to S3); its id, or None (Parquet ends as a dataset; a file needs no upload)."""
    if not output.is_s3 or export_format == "parquet":
        return None
    assert client is not None
    created = client.create_multipart_upload(Bucket=output.bucket, Key=output.key)
    return str(created["UploadId"])


def parts_per_range(count: int) -> int:
    """Part numbers each range owns: its edges' joined part, then its own parts; one more
    number after the last range's share, for the last tail."""
    return (S3_MAX_PARTS - 1) // count


def edge_locations(output: Location, index: int) -> tuple[Location, Location]:
    """A range's head and tail objects."""
    base = f"{output.key}.parts/{index:05d}"
    return (
        Location(output.scheme, output.bucket, f"{base}.head"),
        Location(output.scheme, output.bucket, f"{base}.tail"),
    )


@dataclass
class Edges:
    """A range's edges: its first part (`head`) and what is left after its last full part
    (`tail`) as objects, their sizes once written (`head_bytes` None: not yet), or the tail as
    the upload's last part (`tail_part`)."""

    head: Location
    tail: Location
    head_bytes: int | None
    tail_bytes: int = 0
    tail_part: int = 0


class RangePartsSink(S3MultipartSink):
    """Writes range `index` of `count` into the upload `upload_id` of `location` (the export's
    output): the first part and the rest after the last full part as objects, the full parts in
    between as parts of the upload. `uploaded()` says which."""

    def __init__(
        self,
        *,
        client: S3Client,
        location: Location,
        upload_id: str,
        index: int,
        count: int,
        part_size: int,
        concurrency: int,
    ) -> None:
        super().__init__(
            client=client, location=location, part_size=part_size, concurrency=concurrency
        )
        self._upload.id = upload_id
        share = parts_per_range(count)
        # The first range's first part is the output's first: a part at once, not a head.
        self._first_number = 1 if index == 0 else index * share + 2
        self._last_allowed = (index + 1) * share
        self._final_number = count * share + 1 if index == count - 1 else 0
        """The upload's last part number, for the last range's tail (0: not the last range)."""
        # The part size doubles four times within the share (a range's output may be large).
        self._parts.doubling_every = max(1, (share - 1) // 4)
        self._edges = Edges(*edge_locations(location, index), 0 if index == 0 else None)

    def _put(self, where: Location, body: bytes | bytearray) -> None:
        try:
            self._client.put_object(Bucket=where.bucket, Key=where.key, Body=bytes(body))
        except Exception as exc:
            raise translate(exc, what=f"uploading {where.uri}") from exc

    def _flush_part(self) -> None:
        edges = self._edges
        if edges.head_bytes is None:
            body = self._parts.take()
            self._put(edges.head, body)
            edges.head_bytes = len(body)
            return
        if self._first_number + self._part_number > self._last_allowed:
            raise TransientError(
                f"{self._what()}: a range has more than {self._last_allowed} parts of its own"
            )
        super()._flush_part()

    def _upload_part(self, number: int, body: bytes | bytearray) -> dict[str, Any]:
        return super()._upload_part(self._first_number + number - 1, body)

    def _commit(self) -> None:
        rest, edges = self._parts.take(), self._edges
        first_range = self._first_number == 1
        if edges.head_bytes is None or (first_range and self._part_number == 0 and rest):
            # Under one part: all of it joins the edges around it (also the first range's,
            # which S3's 5 MiB minimum keeps from being a part of its own).
            self._put(edges.head, rest)
            edges.head_bytes = len(rest)
        elif self._final_number and self._part_number and rest:
            # The last range's tail after parts of its own: the upload's last part as it is
            # (the last part may be of any size), nothing for the finishing step to join.
            super()._upload_part(self._final_number, rest)
            edges.tail_part = self._final_number
        elif rest:
            self._put(edges.tail, rest)
            edges.tail_bytes = len(rest)
        self._upload.results(self._what())  # its error, if any

    def uploaded(self) -> dict[str, int]:
        """The range's share of the output: its head and tail objects' sizes (0: none), its
        parts' numbers (`first` to `last`, none when `last < first`) and, when its tail is the
        upload's last part, that part's number (`tailPart`)."""
        edges = self._edges
        return {
            "head": edges.head_bytes or 0,
            "tail": edges.tail_bytes,
            "first": self._first_number,
            "last": self._first_number + self._part_number - 1,
        } | ({"tailPart": edges.tail_part} if edges.tail_part else {})

    def abort(self) -> None:
        """Stop; delete the edges (its parts stay in the upload until the finishing step
        completes it without them or aborts it)."""
        self._stop()
        for where in (self._edges.head, self._edges.tail):
            with contextlib.suppress(Exception):
                self._client.delete_object(Bucket=where.bucket, Key=where.key)
