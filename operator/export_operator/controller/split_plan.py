"""When an export is split over an Indexed Job, and into how many ranges (docs/api.md, "Split
exports").

Pure. An export wants `ranges_wanted` ranges: its request's `parallelism`, else one per
`SPLIT_RANGE_BYTES` of a source of at least `SPLIT_MIN_BYTES` (its size known at admission: the
S3 event's size annotation), at most `SPLIT_MAX_PARALLELISM`. Admission grants it the slots free
for it (`slots_granted`); `SplitPlan` is then N ranges (completions) run P at a time
(parallelism). An export granted a single slot runs as one pod, exactly as an unsplit one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from export_operator import resource
from export_operator.resource import MAX_NAME_LENGTH, job_name_for

if TYPE_CHECKING:  # settings imports admission, which imports this module
    from export_operator.controller.settings import OperatorSettings
    from export_operator.controller.snapshots import ExportView

STEPS = ("prepare", "ranges", "finish", "clean")
"""A split export's Jobs: `ranges` is the Indexed Job (named as a whole export's Job); the
others run one pod each."""
MAX_INDEXED_JOB_NAME = 60
"""Exports whose Job name is longer run whole: the job controller names an Indexed Job's pods'
hosts `<job>-<index>`, which must stay a 63-character DNS label."""
PREPARED_ANNOTATIONS = {
    "upload_id": resource.ANNOTATION_UPLOAD_ID,
    "etag": resource.ANNOTATION_SOURCE_ETAG,
    "version_id": resource.ANNOTATION_SOURCE_VERSION_ID,
}
"""Where the pod templates of the ranges and finishing Jobs carry what `prepare` reported."""


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """What a split export's `prepare` step reported: the export's upload (csv, csv.gz, jsonl)
    and the source version every range and the finishing step read (docs/api.md, "Split
    exports"); "" for what it did not report."""

    upload_id: str = ""
    etag: str = ""
    version_id: str = ""

    def annotations(self) -> dict[str, str]:
        return {name: getattr(self, field) for field, name in PREPARED_ANNOTATIONS.items()}

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, Any]) -> Prepared:
        found = {f: str(annotations.get(n) or "") for f, n in PREPARED_ANNOTATIONS.items()}
        return cls(**found) if any(found.values()) else NOT_PREPARED


NOT_PREPARED = Prepared()


@dataclasses.dataclass(frozen=True, slots=True)
class SplitPlan:
    """N byte ranges (the Job's completions), P converted at once (its parallelism)."""

    ranges: int = 1
    parallelism: int = 1

    @property
    def split(self) -> bool:
        return self.ranges > 1


WHOLE = SplitPlan()


def ranges_wanted(
    export: ExportView, *, settings: OperatorSettings, size: int | None = None
) -> int:
    """How many ranges the export should be converted as (1 = one pod)."""
    if len(job_name_for(export.name)) > MAX_INDEXED_JOB_NAME:
        return 1
    cap = settings.split.max_parallelism
    asked = export.spec.get("parallelism")
    if type(asked) is int:
        return max(1, min(asked, cap))
    size = size if size is not None else export.source_size
    if size is None or not settings.split.min_bytes or size < settings.split.min_bytes:
        return 1
    return max(1, min(cap, max(2, -(-size // settings.split.range_bytes))))


def slots_granted(wanted: int, free: int | None) -> int:
    """The pods an export wanting `wanted` runs at once with `free` slots (None: no limit): as
    many as it wants and are free, but one (a whole export) when fewer than two are free."""
    granted = wanted if free is None else min(wanted, free)
    return granted if granted >= 2 else 1


def plan(wanted: int, granted: int) -> SplitPlan:
    """The plan of an export wanting `wanted` ranges and granted `granted` slots."""
    if wanted < 2 or granted < 2:
        return WHOLE
    return SplitPlan(ranges=wanted, parallelism=min(wanted, granted))


def step_job_name(export_name: str, step: str) -> str:
    """The Job of one step of a split export: deterministic, at most 63 characters."""
    main = job_name_for(export_name)
    if step == "ranges":
        return main
    name = f"{main}-{step}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(export_name.encode()).hexdigest()[:10]
    return f"{main[: MAX_NAME_LENGTH - len(step) - 12]}-{digest}-{step}"
