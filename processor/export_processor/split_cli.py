"""The processor's split-export modes (docs/processor.md, "Splitting"), from flags or the Job's
environment:

- one range: `--range-count N` (`EXPORTJOBS_RANGE_COUNT`) with `--range-index I`
  (`EXPORTJOBS_RANGE_INDEX`, else the Indexed Job's `JOB_COMPLETION_INDEX`);
- before the ranges: `--prepare-ranges` pins the source's version (its ETag, and its version id
  in a versioned bucket) and, for csv, csv.gz and jsonl to S3, opens the export's upload; it
  prints `{"uploadId": ..., "source": {"etag": ..., "versionId": ...}}`. Every range and the
  finishing step then get them (`--range-upload-id`, `EXPORTJOBS_RANGE_UPLOAD_ID`,
  `--source-etag`, `EXPORTJOBS_SOURCE_ETAG`, `--source-version-id`,
  `EXPORTJOBS_SOURCE_VERSION_ID`): the ranges upload into the upload, and every read of the
  source is of that version (an object changed since fails the export: SOURCE_CHANGED);
- the finishing step: `--finish-ranges FILE` (`EXPORTJOBS_RANGE_RESULTS`: the ranges' result
  JSON, a list, as a file path or inline) with `--range-count N`;
- cleaning up a failed or cancelled split export: `--clean-ranges` with `--range-count N`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export_processor.errors import InvalidConfigError
from export_processor.locations import export_output, parse_location
from export_processor.progress import ProgressState
from export_processor.range_sink import open_upload
from export_processor.s3client import S3Client, head_source
from export_processor.settings import ProcessorSettings
from export_processor.source import SourcePin

if TYPE_CHECKING:
    from export_processor.range_export import RangeExporter
    from export_processor.ranges import RangeSpec
    from export_processor.split import RangeOutcome

# The modules that convert (pyarrow's) are imported only by the modes that convert: the
# preparation and the clean-up start in a third less CPU without them (a split export's
# preparation is a step of its own, before any range starts).

MAX_RANGES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("split exports (docs/processor.md, Splitting)")
    group.add_argument("--range-count", type=int, help="the export is split in this many ranges")
    group.add_argument("--range-index", type=int, help="convert this range (0-based)")
    group.add_argument("--range-start", type=int, help="the range's verified first byte")
    group.add_argument("--range-kinds", help="comma-separated column kinds to write with")
    group.add_argument("--range-upload-id", help="the export's upload (--prepare-ranges)")
    group.add_argument("--prepare-ranges", action="store_true", help="open the export's upload")
    group.add_argument("--finish-ranges", help="finish: the ranges' result JSON (a file)")
    group.add_argument("--clean-ranges", action="store_true", help="remove the parts")


@dataclass(frozen=True)
class SplitJob:
    mode: str
    """`prepare`, `range`, `finish` or `clean`."""
    count: int
    spec: RangeSpec | None = None
    outcomes: list[RangeOutcome] | None = None
    upload_id: str | None = None


def _int(raw: str | int | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidConfigError(f"{name} must be an integer, not {raw!r}") from None


def _outcomes(raw: str) -> list[RangeOutcome]:
    from export_processor.split import RangeOutcome

    text = raw if raw.lstrip().startswith("[") else Path(raw).read_text()
    try:
        items = json.loads(text)
        return [RangeOutcome.from_json(int(i["index"]), i["payload"]) for i in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidConfigError(f"the ranges' results are not readable: {exc}") from exc


def split_job(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> SplitJob | None:
    """The split mode asked for, or None for a whole export."""
    env = os.environ if env is None else env
    count = _int(args.range_count or env.get("EXPORTJOBS_RANGE_COUNT"), "the range count")
    if count is None:
        return None
    if not 1 <= count <= MAX_RANGES:
        raise InvalidConfigError(f"the range count must be 1..{MAX_RANGES}, not {count}")
    upload_id = args.range_upload_id or env.get("EXPORTJOBS_RANGE_UPLOAD_ID") or None
    if args.prepare_ranges:
        return SplitJob("prepare", count)
    if args.clean_ranges:
        return SplitJob("clean", count, upload_id=upload_id)
    results = args.finish_ranges or env.get("EXPORTJOBS_RANGE_RESULTS")
    if results:
        return SplitJob("finish", count, outcomes=_outcomes(results), upload_id=upload_id)
    index = _int(
        args.range_index
        if args.range_index is not None
        else env.get("EXPORTJOBS_RANGE_INDEX", env.get("JOB_COMPLETION_INDEX")),
        "the range index",
    )
    if index is None or not 0 <= index < count:
        raise InvalidConfigError(f"a range index in 0..{count - 1} is needed, not {index}")
    from export_processor.ranges import RangeSpec, kind_of

    kinds_raw = args.range_kinds or env.get("EXPORTJOBS_RANGE_KINDS")
    try:
        kinds = kinds_raw.split(",") if kinds_raw else None
        for kind in kinds or []:
            kind_of(kind)
    except ValueError as exc:
        raise InvalidConfigError(str(exc)) from None
    start = _int(
        args.range_start if args.range_start is not None else env.get("EXPORTJOBS_RANGE_START"),
        "the range start",
    )
    spec = RangeSpec(index, count, start=start, kinds=kinds, upload_id=upload_id)
    return SplitJob("range", count, spec=spec, upload_id=upload_id)


def pin_source(settings: ProcessorSettings, client: S3Client | None) -> SourcePin:
    """The version of the source every pod of a split export reads: the one given, else the
    one there now (a file has none).

    Raises:
        SourceMissingError: no such object, version or bucket.
        SourceChangedError: the object is not the ETag given.
    """
    location = parse_location(settings.source_uri, prefix=False)
    if not location.is_s3:
        return SourcePin()
    assert client is not None
    given = SourcePin(settings.source_etag, settings.source_version_id)
    return head_source(client, location, pin=given)[1]


def range_exporter(
    job: SplitJob, settings: ProcessorSettings, client: S3Client | None, progress: ProgressState
) -> RangeExporter:
    from export_processor.range_export import RangeExporter

    assert job.spec is not None
    return RangeExporter(settings, s3_client=client, spec=job.spec, progress=progress)


def finish(job: SplitJob, settings: ProcessorSettings, client: S3Client | None) -> dict[str, Any]:
    """The preparation, the finishing step or the clean-up; returns the result JSON."""
    if job.mode == "prepare":
        output = export_output(settings)
        pin = pin_source(settings, client)  # first: a missing source leaves no upload open
        upload_id = open_upload(client, output, settings.export_format)
        return {"uploadId": upload_id, "source": pin.as_json()}
    from export_processor.split import Finisher

    finisher = Finisher(settings, client, job.count, upload_id=job.upload_id)
    if job.mode == "clean":
        finisher.clean()
        return {"cleaned": job.count}
    assert job.outcomes is not None
    result, summary = finisher.finish(job.outcomes)
    return result.as_json() | {"split": summary}
