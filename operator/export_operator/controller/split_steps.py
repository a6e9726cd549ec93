"""The steps around a split export's ranges, driven from what the caches show (level-based).

The reconciler calls `SplitSteps.advance` for every split export after deciding its status:

- ranges Job suspended, no `prepare` Job: create it; `prepare` complete: resume the ranges Job
  with the source version and upload id its pod reported (`Prepared`: every range and the
  finishing step read that version; no upload id: the ranges write part objects instead, which
  the finishing step composes);
- ranges Job done (Complete, or failed only by indexes): create the `finish` Job with every
  range's result or error (the termination messages of its pods);
- export Failed or Cancelled: the other steps' Jobs go, and a `clean` Job (created suspended
  at once, while the ranges Job still tells N and the upload id) runs once no range pod is left;
- Running: the ranges' progress summed into the export's (at most every `PROGRESS_EVERY`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from export_operator import termination
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.caches import Caches
from export_operator.controller.jobs import JobFactory
from export_operator.controller.snapshots import ExportView, JobView, PodView
from export_operator.controller.split_jobs import results_document, resume_patch
from export_operator.controller.split_plan import NOT_PREPARED, STEPS, Prepared, step_job_name
from export_operator.controller.split_status import ranges_done, summed_progress
from export_operator.controller.status import Decision
from export_operator.informer import Key
from export_operator.resource import ExitCode, Phase

log = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0
"""Seconds between two writes of a split export's summed progress (its ranges patch theirs
every 5 s each: the export's own figures are written at most as often as one range's)."""
MAX_REPORTED = 1024
"""The longest upload id, ETag or version id taken from the `prepare` pod's message."""


def _text(found: object) -> str:
    """`found` when it is printable text of 1 to MAX_REPORTED characters, else ""."""
    if isinstance(found, str) and 0 < len(found) <= MAX_REPORTED and found.isprintable():
        return found
    return ""


def prepared_from(pods: Sequence[PodView]) -> Prepared:
    """What the `prepare` pod reported (`{"uploadId": ..., "source": {"etag": ...,
    "versionId": ...}}`); "" for each part it did not report, or not as printable text."""
    for pod in pods:
        if pod.step == "prepare" and pod.exit_code == int(ExitCode.OK):
            found = termination.parse_object(pod.container.termination_message) or {}
            source = found.get("source")
            source = source if isinstance(source, dict) else {}
            return Prepared(
                upload_id=_text(found.get("uploadId")),
                etag=_text(source.get("etag")),
                version_id=_text(source.get("versionId")),
            )
    return NOT_PREPARED


def range_payloads(pods: Sequence[PodView], count: int) -> list[tuple[int, dict[str, Any]]]:
    """Each range's result (its pod that succeeded) or its last error, for the finishing step."""
    payloads: list[tuple[int, dict[str, Any]]] = []
    for index in range(count):
        ended = [p for p in pods if p.step == "ranges" and p.index == index and p.terminated]
        ended.sort(
            key=lambda p: (p.exit_code != 0, -(p.container.finished_at or p.created).timestamp())
        )
        payload: dict[str, Any] | None = None
        for pod in ended:
            payload = termination.parse_object(pod.container.termination_message)
            if payload is not None and (pod.exit_code == 0) == ("error" not in payload):
                break
            payload = None
        if payload is None:
            message = f"range {index} left no result (its pods are gone or wrote none)"
            payload = {"error": {"code": "INTERNAL", "message": message, "retryable": True}}
        payloads.append((index, payload))
    return payloads


def _live(pods: Sequence[PodView]) -> bool:
    return any(p.step != "clean" and not p.terminated for p in pods)


@dataclasses.dataclass(frozen=True, slots=True)
class _Split:
    """What one `advance` works on: a split export, its Jobs and pods, and where to write."""

    writer: KubeWriter
    export: ExportView
    job: JobView | None
    """The ranges Job (or the last seen of it)."""
    steps: Mapping[str, JobView]
    pods: Sequence[PodView]


class SplitSteps:
    """A split export's `prepare`, `finish` and `clean` Jobs, and its summed progress."""

    def __init__(self, *, jobs: JobFactory, caches: Caches) -> None:
        self._jobs = jobs
        self._caches = caches
        self._progress: dict[str, float] = {}
        """ExportJob uid → when its summed progress was last written (monotonic)."""

    def steps_of(self, key: Key) -> dict[str, JobView]:
        """The export's step Jobs other than the ranges Job, by step."""
        found = {}
        for step in STEPS[:1] + STEPS[2:]:
            job = self._caches.jobs.get((key[0], step_job_name(key[1], step)))
            if job is not None and job.export_name == key[1]:
                found[step] = job
        return found

    async def advance(
        self,
        writer: KubeWriter,
        export: ExportView,
        job: JobView | None,
        steps: Mapping[str, JobView],
        pods: Sequence[PodView],
        decision: Decision,
    ) -> float | None:
        """Create, resume or remove what the export's state asks for; seconds until the
        summed progress may be written again (None: nothing waits)."""
        split = _Split(writer, export, job, steps, pods)
        if decision.phase in (Phase.FAILED, Phase.CANCELLED):
            await self._clean(split)
            return None
        if job is not None and job.step == "ranges" and not job.deleting:
            if job.suspended:
                await self._prepare(split, job)
            elif ranges_done(job) and "finish" not in steps:
                results = results_document(range_payloads(pods, job.ranges))
                await self._create(split, "finish", job.ranges, job.prepared, results)
        if decision.phase in (Phase.RUNNING, Phase.SUCCEEDED):
            return await self._write_progress(writer, export, final=decision.phase.finished)
        return None

    async def _create(
        self,
        split: _Split,
        step: str,
        ranges: int,
        prepared: Prepared,
        results: str = "",
        *,
        suspend: bool = False,
    ) -> None:
        export = split.export
        manifest = self._jobs.step(export, step, ranges=ranges, prepared=prepared, results=results)
        if isinstance(manifest, str):  # the spec resolved for the ranges: not expected
            log.error("%s/%s: %s", export.namespace, export.name, manifest)
            return
        if suspend:
            manifest["spec"]["suspend"] = True
        if await split.writer.create_job(manifest):
            log.info("created the %s Job of %s/%s", step, export.namespace, export.name)

    async def _prepare(self, split: _Split, job: JobView) -> None:
        prepare = split.steps.get("prepare")
        if prepare is None:
            await self._create(split, "prepare", job.ranges, NOT_PREPARED)
        elif prepare.complete:
            prepared = prepared_from(split.pods)
            await split.writer.patch_job(
                namespace=job.namespace, name=job.name, patch=resume_patch(prepared)
            )
            log.info("resumed the ranges of %s/%s (%s)", *split.export.key, prepared)

    async def _clean(self, split: _Split) -> None:
        """Stop every step, then remove the parts and abort the uploads (the `clean` Job)."""
        for step, step_job in split.steps.items():
            if step != "clean" and step_job.occupies_slot:
                await split.writer.delete_job(namespace=step_job.namespace, name=step_job.name)
        clean = split.steps.get("clean")
        if clean is None:
            job = split.job
            source = job if job is not None and job.step == "ranges" else split.steps.get("finish")
            if source is None:
                return  # nothing was split yet
            prepared = source.prepared
            if not prepared.upload_id:  # (suspended still: what `prepare` reported, if it did)
                prepared = prepared_from(split.pods)
            await self._create(split, "clean", source.ranges, prepared, suspend=True)
        elif clean.suspended and not _live(split.pods):
            await split.writer.patch_job(
                namespace=clean.namespace, name=clean.name, patch={"spec": {"suspend": False}}
            )

    async def _write_progress(
        self, writer: KubeWriter, export: ExportView, *, final: bool
    ) -> float | None:
        summed = summed_progress(export.status, export.source_size)
        if summed is None:
            return None
        wait = self._progress.get(export.uid, 0.0) + PROGRESS_EVERY - time.monotonic()
        if wait > 0 and not final:
            return wait
        await writer.patch_status(
            namespace=export.namespace,
            name=export.name,
            uid=export.uid,
            status={"progress": summed},
        )
        self._progress[export.uid] = time.monotonic()
        return None

    def forget(self, export: ExportView) -> None:
        self._progress.pop(export.uid, None)
