"""Source and destination URIs (`s3://bucket/key`, `file:///path`) and the output object name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from export_processor.errors import InvalidConfigError

if TYPE_CHECKING:
    from export_processor.settings import ProcessorSettings

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z")

EXTENSIONS = {"csv": ".csv", "csv.gz": ".csv.gz", "jsonl": ".jsonl", "parquet": ".parquet"}
"""Output file extension by format."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where bytes live: an S3 object (or prefix) or a local path (or directory)."""

    scheme: str
    """`s3` or `file`."""
    bucket: str
    """The S3 bucket; empty for `file`."""
    key: str
    """The S3 key, or the absolute local path for `file`."""

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return f"file://{self.key}"

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"


def parse_location(uri: str, *, prefix: bool) -> Location:
    """Parse an `s3://` or `file://` URI.

    Args:
        uri: the URI.
        prefix: True for a destination prefix (may be empty or end in `/`), False for an object.

    Raises:
        InvalidConfigError: when the URI is not a usable S3 or file URI.
    """
    if uri.startswith("s3://"):
        # Keys may hold `?` and `#`, so no URL parsing here: everything after the bucket is key.
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidConfigError(f"invalid bucket name in {uri!r}")
        if not prefix and (not key or key.endswith("/")):
            raise InvalidConfigError(f"the URI names no object: {uri!r}")
        if len(key.encode("utf-8")) > 1024 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise InvalidConfigError(f"not a valid S3 key: {uri!r}")
        return Location("s3", bucket, key)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidConfigError(f"file URIs must be local (file:///path): {uri!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise InvalidConfigError(f"file URIs need an absolute path: {uri!r}")
        if not prefix and path.endswith("/"):
            raise InvalidConfigError(f"the URI names no file: {uri!r}")
        return Location("file", "", path)
    raise InvalidConfigError(f"unsupported URI (expected s3:// or file://): {uri!r}")


def output_location(
    *, source: Location, destination: Location, export_format: str, export_name: str | None
) -> Location:
    """The deterministic output: `<prefix><export name>/<source stem><ext>`.

    Without an export name: `<prefix><source stem><ext>`. The same inputs always give the same
    key, so a retried export overwrites its earlier output instead of adding another.
    """
    stem = PurePosixPath(source.key).stem or "export"
    name = f"{stem}{EXTENSIONS[export_format]}"
    prefix = destination.key
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if export_name:
        name = f"{export_name}/{name}"
    return Location(destination.scheme, destination.bucket, f"{prefix}{name}")


def export_output(settings: ProcessorSettings) -> Location:
    """The output of the export `settings` describe (`output_location`)."""
    return output_location(
        source=parse_location(settings.source_uri, prefix=False),
        destination=parse_location(settings.destination_uri, prefix=True),
        export_format=settings.export_format,
        export_name=settings.export_name,
    )


def dataset_location(output: Location) -> Location:
    """Where a split Parquet export's part files go: `<output key without .parquet>/`."""
    key = output.key.removesuffix(EXTENSIONS["parquet"])
    return Location(output.scheme, output.bucket, f"{key}/")


def part_location(output: Location, export_format: str, index: int) -> Location:
    """The output of range `index` of a split export: a part file of the Parquet dataset, or a
    part object (`<output>.parts/NNNNN`) that the finishing step composes into the output and
    deletes."""
    if export_format == "parquet":
        dataset = dataset_location(output)
        return Location(output.scheme, output.bucket, f"{dataset.key}part-{index:05d}.parquet")
    return Location(output.scheme, output.bucket, f"{output.key}.parts/{index:05d}")
