"""The finishing step of a split export: verify the ranges, redo the wrong ones, merge the kinds,
compose one result and remove the parts; or fall back to one pod. Never a wrong file.

1. Boundaries. The first range starts at the data's start (verified). A range is accepted when
   its reported start equals the verified boundary before it; its end is then verified too (its
   own parse started from a boundary). Any other range is converted again from that boundary
   (`redo`), in this process, its end found by the quotes' parity: redoing k of n ranges costs
   k ranges' time, never more than one pod's n. A range that fails with bad input from a
   verified start when its end was not guessed (the last range, or a redo) makes the export run
   as one pod instead (the right answer, or the right error, with its line numbers).
2. Kinds (jsonl, parquet). The kinds the single pod ends with follow from every range's
   (`merge_kinds`); a range written with other kinds is converted once more with them.
3. One result: csv, csv.gz and jsonl parts composed into the output object (compose.py);
   parquet parts left as a dataset with a manifest. Parts are removed, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from export_processor.column_types import FLOAT_EXACT_INTEGERS
from export_processor.compose import Piece, complete_ranges, compose, remove, tree_sha256
from export_processor.convert import Exporter, ExportResult
from export_processor.errors import BadInputError, ExportError, raise_final
from export_processor.locations import Location, dataset_location, part_location
from export_processor.range_export import RangeExporter
from export_processor.range_sink import edge_locations, open_upload
from export_processor.ranges import RangePlan, RangeReport, RangeSpec
from export_processor.s3client import S3Client
from export_processor.settings import ProcessorSettings
from export_processor.sink import open_sink
from export_processor.split_cli import pin_source

MANIFEST_NAME = "_manifest.json"


@dataclass
class RangeOutcome:
    """One range's result JSON as the finishing step reads it: `result` (ExportResult's JSON
    with `range`) or `error` (with `range`, the start, when it was known)."""

    index: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    report: RangeReport | None = None

    @classmethod
    def from_json(cls, index: int, data: dict[str, Any]) -> RangeOutcome:
        report = data.get("range")
        return cls(
            index=index,
            result=data if "error" not in data else None,
            error=data.get("error"),
            report=RangeReport.from_json(report) if isinstance(report, dict) else None,
        )

    @property
    def ok(self) -> bool:
        return self.result is not None and self.report is not None and self.report.end is not None


def run_range(
    settings: ProcessorSettings, client: S3Client | None, spec: RangeSpec
) -> RangeOutcome:
    """Convert one range in this process (a redo, or every range in tests)."""
    exporter = RangeExporter(settings, s3_client=client, spec=spec)
    try:
        result = exporter.run()
    except ExportError as error:
        report = exporter.report
        return RangeOutcome(
            spec.index,
            error={"code": str(error.code), "message": error.message},
            report=report,
        )
    assert exporter.report is not None
    payload = result.as_json() | {"range": exporter.report.as_json()}
    return RangeOutcome(spec.index, result=payload, report=exporter.report)


def _fits(bounds: tuple[int, int] | None) -> bool:
    return bounds is None or (
        bounds[0] > -FLOAT_EXACT_INTEGERS and bounds[1] < FLOAT_EXACT_INTEGERS
    )


def _union(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


def merge_kinds(start: list[str], reports: list[RangeReport]) -> list[str]:
    """The kinds one pod ends with, from the kinds every range (started from `start`, the first
    block's) ended with: a column keeps its kind when every range kept it; int64 becomes float64
    when some range widened it so and every integer of the others prints the same as a double
    (below 10^10, as in one pod); anything else becomes text."""
    merged = []
    for column, first in enumerate(start):
        kind, bounds = first, None
        for report in reports:
            got, got_bounds = report.kinds[column], report.int_bounds.get(column)
            if kind == "text" or got == kind == "float64":
                continue
            if got == "text":
                kind = "text"
            elif kind == "int64" and got == "int64":
                bounds = _union(bounds, got_bounds)
            elif kind == "int64" and got == "float64":
                kind = "float64" if _fits(bounds) else "text"
            elif kind == "float64" and got == "int64":
                kind = "float64" if _fits(got_bounds) else "text"
            elif got != kind:
                kind = "text"
        merged.append(kind)
    return merged


def _same_output(export_format: str, got: list[str], want: list[str]) -> bool:
    """Whether a range written with `got` wrote what `want` writes: JSON Lines prints an integer
    below 10^10 the same as a double (merge_kinds made float64 only for such integers)."""
    if export_format != "jsonl":
        return got == want
    return all(g == w or (g, w) == ("int64", "float64") for g, w in zip(got, want, strict=True))


class Fallback(Exception):  # noqa: N818 - a decision, not an error
    """The ranges cannot be verified: the export runs as one pod."""


@dataclass
class Finisher:
    """Finishes a split export of `count` ranges from their outcomes."""

    settings: ProcessorSettings
    client: S3Client | None
    count: int
    run: Callable[[RangeSpec], RangeOutcome] | None = None
    cuts: tuple[int, ...] | None = None
    upload_id: str | None = None
    """The export's upload the ranges wrote into (`prepare`), if any."""
    redone: list[int] = field(default_factory=list)
    fallback: str | None = None

    def __post_init__(self) -> None:
        if self.run is None:
            self.run = lambda spec: run_range(self.settings, self.client, spec)
        self._probe = RangeExporter(
            self.settings, s3_client=self.client, spec=RangeSpec(0, self.count)
        )

    @property
    def output(self) -> Location:
        """The export's output (what the ranges' parts make up)."""
        return self._probe.output

    def prepare(self) -> str | None:
        """Pin the source's version (`settings`, every range's) and open the export's upload."""
        self.settings = pin_source(self.settings, self.client).applied(self.settings)
        self._probe.settings = self.settings
        self.upload_id = open_upload(self.client, self.output, self.settings.export_format)
        return self.upload_id

    def _spec(self, index: int, **fields: Any) -> RangeSpec:
        return RangeSpec(index, self.count, cuts=self.cuts, upload_id=self.upload_id, **fields)

    def parts(self) -> list[Location]:
        return [
            part_location(self.output, self.settings.export_format, i) for i in range(self.count)
        ]

    def _edges(self) -> list[Location]:
        return [edge for i in range(self.count) for edge in edge_locations(self.output, i)]

    def _uploads_prefix(self) -> Location:
        if self.settings.export_format == "parquet":
            return dataset_location(self.output)
        return Location(self.output.scheme, self.output.bucket, f"{self.output.key}.parts/")

    def clean(self) -> None:
        """Remove every part and open upload of this export (a failed or cancelled one)."""
        locations = self.parts() + self._edges()
        if self.upload_id is not None and self.client is not None:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.output.bucket, Key=self.output.key, UploadId=self.upload_id
                )
        if self.settings.export_format == "parquet":
            manifest = dataset_location(self.output)
            locations.append(
                Location(manifest.scheme, manifest.bucket, manifest.key + MANIFEST_NAME)
            )
        remove(self.client, locations, uploads_under=self._uploads_prefix())
        if self.output.is_s3 and self.settings.export_format != "parquet":
            # The export's own upload when its id never reached us (the prepare step killed
            # after CreateMultipartUpload): every upload of the output key goes.
            remove(self.client, [], uploads_under=self.output)

    def finish(self, outcomes: list[RangeOutcome]) -> tuple[ExportResult, dict[str, Any]]:
        """The export's result and its `split` summary; raises the export's error."""
        started = time.monotonic()
        try:
            try:
                accepted = self._verified(outcomes)
                accepted = self._one_schema(accepted)
                result = self._compose(accepted, started)
            except Fallback as why:
                self.fallback = str(why)
                self.clean()
                result = self._one_pod()
        except BaseException:
            self.clean()
            raise
        summary: dict[str, Any] = {"ranges": self.count, "redone": sorted(set(self.redone))}
        if self.fallback is not None:
            summary["fallback"] = self.fallback
        else:
            summary["partBytes"] = self.part_bytes
        return result, summary

    def _plan(self, outcomes: list[RangeOutcome]) -> RangePlan:
        """The plan, from the head; the first block's kinds from the ranges' reports when their
        digest says so (read_plan), else parsed."""
        known = [(o.report.plan, o.report.kinds) for o in outcomes if o.ok and o.report is not None]
        source = self._probe._open_source()
        try:
            return self._probe.read_plan(source, known=known)
        finally:
            source.close()
            # Ranges converted again here (or the whole export) read the version read here.
            self.settings = self._probe.settings

    def _redo(self, spec: RangeSpec) -> RangeOutcome:
        assert self.run is not None
        self.redone.append(spec.index)
        outcome = self.run(spec)
        if not outcome.ok:
            raise Fallback(f"range {spec.index} failed again: {outcome.error}")
        return outcome

    def _verified(self, outcomes: list[RangeOutcome]) -> list[RangeOutcome]:
        by_index = {o.index: o for o in outcomes}
        if sorted(by_index) != list(range(self.count)):
            raise Fallback(f"ranges reported: {sorted(by_index)}, expected {self.count}")
        plan = self._plan(outcomes)
        self.plan = plan
        boundary = plan.data_start
        accepted: list[RangeOutcome] = []
        for index in range(self.count):
            outcome = by_index[index]
            report = outcome.report
            verified = report is not None and report.start == boundary
            if outcome.error is not None:
                raise_final(outcome.error)
                if verified and _bad_input(outcome.error) and index == self.count - 1:
                    # Read to the source's end from a verified start: the input is bad.
                    raise Fallback(f"range {index}: {outcome.error.get('message')}")
            if not (outcome.ok and verified and report is not None and report.plan == plan.digest):
                # Its end found by parity: exact where a guessed one (the next range's start,
                # fooled by a quoted value) left its parse a quote open at the end. A range
                # that fails so too has bad input: the export then runs as one pod.
                outcome = self._redo(self._spec(index, start=boundary, plan=plan, parity_end=True))
            assert outcome.report is not None and outcome.report.end is not None
            boundary = outcome.report.end
            accepted.append(outcome)
        if boundary != plan.size:
            raise Fallback(f"the last range ended at {boundary}, not at {plan.size}")
        return accepted

    def _one_schema(self, accepted: list[RangeOutcome]) -> list[RangeOutcome]:
        reports = [o.report for o in accepted if o.report is not None]
        merged = merge_kinds(self.plan.kinds, reports)
        self.kinds = merged
        fmt = self.settings.export_format
        result = []
        for outcome in accepted:
            report = outcome.report
            assert report is not None
            if not _same_output(fmt, report.kinds, merged):
                spec = self._spec(
                    outcome.index, start=report.start, end=report.end, kinds=merged, plan=self.plan
                )
                redone = self._redo(spec)
                assert redone.report is not None
                if redone.report.end != report.end:
                    raise Fallback(f"range {outcome.index} ended elsewhere when redone")
                outcome = redone
            result.append(outcome)
        return result

    def _compose(self, accepted: list[RangeOutcome], started: float) -> ExportResult:
        results = [o.result for o in accepted if o.result is not None]
        sizes = [int(r["bytes"]) for r in results]
        digests = [str(r["sha256"]) for r in results]
        fmt = self.settings.export_format
        if fmt == "parquet":
            uri = self._manifest(results)
        elif self.upload_id is not None:
            assert self.client is not None
            shares = [o.report.upload if o.report else None for o in accepted]
            if any(share is None for share in shares):
                raise Fallback("a range did not write into the export's upload")
            complete_ranges(
                self.client,
                self.output,
                self.upload_id,
                self.count,
                [share for share in shares if share is not None],
                sum(sizes),
            )
            remove(self.client, self._edges(), uploads_under=self._uploads_prefix())
            uri = self.output.uri
        else:
            pieces = [Piece(loc, size) for loc, size in zip(self.parts(), sizes, strict=True)]
            compose(self.client, pieces, self.output)
            remove(self.client, self.parts(), uploads_under=self._uploads_prefix())
            uri = self.output.uri
        self.part_bytes = sizes
        return ExportResult(
            uri=uri,
            bytes=sum(sizes),
            rows=sum(int(r["rows"]) for r in results),
            sha256=tree_sha256(digests),
            format=fmt,
            bytes_read=sum(int(r["bytesRead"]) for r in results),
            duration_seconds=max(float(r["durationSeconds"]) for r in results)
            + time.monotonic()
            - started,
        )

    def _manifest(self, results: list[dict[str, Any]]) -> str:
        dataset = dataset_location(self.output)
        manifest = {
            "format": "parquet",
            "columns": [
                {"name": name, "kind": kind}
                for name, kind in zip(self.plan.names, self.kinds, strict=True)
            ],
            "rows": sum(int(r["rows"]) for r in results),
            "parts": [
                {
                    "key": loc.key.removeprefix(dataset.key),
                    "rows": int(r["rows"]),
                    "bytes": int(r["bytes"]),
                    "sha256": r["sha256"],
                }
                for loc, r in zip(self.parts(), results, strict=True)
            ],
        }
        where = Location(dataset.scheme, dataset.bucket, dataset.key + MANIFEST_NAME)
        sink = open_sink(location=where, client=self.client, part_size=8 << 20, concurrency=1)
        try:
            sink.write(json.dumps(manifest, indent=1).encode())
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        return dataset.uri

    def _one_pod(self) -> ExportResult:
        return Exporter(self.settings, s3_client=self.client).run()


def _bad_input(error: dict[str, Any]) -> bool:
    return str(error.get("code")) == str(BadInputError.code)


def run_split(
    settings: ProcessorSettings,
    client: S3Client | None,
    count: int,
    cuts: tuple[int, ...] | None = None,
) -> tuple[ExportResult, dict[str, Any]]:
    """A whole split export in this process: every range in turn, then the finishing step."""
    finisher = Finisher(settings, client, count, cuts=cuts)
    finisher.prepare()
    outcomes = [run_range(finisher.settings, client, finisher._spec(i)) for i in range(count)]
    return finisher.finish(outcomes)
