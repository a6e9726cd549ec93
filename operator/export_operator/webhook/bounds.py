"""Where exports may read and write: the allowed source and destination prefixes.

A source must lie under an allowed source prefix and under no destination prefix (a report is
never the input of another export, and one tenant's report is never readable as a "source"); a
destination must lie under an allowed destination prefix. An S3 event for an object under a
destination prefix is ignored, so an export's own output can never trigger another export.

Prefixes match as plain string prefixes of `bucket/key`, like S3's own prefix filters: write them
ending in `/` (`s3://exports-input/`, `s3://exports-output/reports/`).
"""

from __future__ import annotations

from dataclasses import dataclass

from export_operator.models import ExportJobSpec
from export_operator.resource import S3Location, parse_s3_uri
from export_operator.webhook.problems import Problem, ProblemCode


@dataclass(frozen=True, slots=True)
class S3Prefix:
    """`s3://bucket/prefix`: every object whose key starts with `prefix` in `bucket`."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Prefix:
        """Parse `s3://bucket/` or `s3://bucket/prefix/`.

        Raises:
            ValueError: when `uri` is not an `s3://bucket/...` prefix.
        """
        location = parse_s3_uri(uri if uri.count("/") >= 3 else uri + "/", prefix=True)
        return cls(location.bucket, location.key)

    def contains(self, location: S3Location) -> bool:
        return location.bucket == self.bucket and location.key.startswith(self.prefix)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The allowed source and destination prefixes, fixed at start-up."""

    sources: tuple[S3Prefix, ...]
    destinations: tuple[S3Prefix, ...]

    def is_output(self, location: S3Location) -> bool:
        """True for an object under any destination prefix (an export's output)."""
        return any(p.contains(location) for p in self.destinations)

    def check_spec(self, spec: ExportJobSpec) -> None:
        """Raises a 422 problem unless the spec's source and destination are within bounds."""
        if spec.source is not None:
            self.check_source(parse_s3_uri(spec.source.uri))
        if spec.destination is not None:
            self.check_destination(spec.destination.uri)

    def check_source(self, location: S3Location) -> None:
        """Raises a 422 `source-not-allowed` problem unless exports may read `location`."""
        if self.is_output(location) or not any(p.contains(location) for p in self.sources):
            allowed = ", ".join(p.uri for p in self.sources) or "none configured"
            raise Problem(
                ProblemCode.SOURCE_NOT_ALLOWED,
                f"{location.uri} is not under an allowed source prefix ({allowed}) "
                "or lies under an output prefix",
            )

    def check_destination(self, uri: str) -> None:
        """Raises a 422 `destination-not-allowed` problem unless exports may write under `uri`
        (an `s3://bucket/prefix/` already validated as such)."""
        location = S3Prefix.parse(uri)
        target = S3Location(location.bucket, location.prefix)
        if not any(p.contains(target) for p in self.destinations):
            allowed = ", ".join(p.uri for p in self.destinations) or "none configured"
            raise Problem(
                ProblemCode.DESTINATION_NOT_ALLOWED,
                f"{uri} is not under an allowed destination prefix ({allowed})",
            )


def template_prefix(dataset_uri_template: str) -> str:
    """The fixed folder of a dataset URI template: `s3://datasets/{dataset_id}.csv` →
    `s3://datasets/`."""
    head = dataset_uri_template.split("{dataset_id}", 1)[0]
    return head[: head.rfind("/") + 1] if head.count("/") >= 3 else head
