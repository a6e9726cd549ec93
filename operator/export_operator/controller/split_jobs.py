"""The Jobs of a split export, made from the whole export's Job (`jobs.build_job`).

Pure. A split export of N ranges has up to four Jobs, one after another (docs/api.md, "Split
exports"):

- `prepare`: one pod, `--prepare-ranges`, pins the source's version (ETag, and version id in a
  versioned bucket) and, for csv, csv.gz and jsonl, opens the export's multipart upload; it
  reports them in its termination message;
- `ranges`: the Indexed Job, named as a whole export's Job: completions N, parallelism P, each
  index converting one byte range (`JOB_COMPLETION_INDEX`). It is created at admission (so it
  holds its P slots from the start), suspended; the operator resumes it with what `prepare`
  reported in its pod template's annotations, which the containers read through the downward
  API (a suspended Job's template annotations may change; its environment may not): every
  range reads the pinned version (`EXPORTJOBS_SOURCE_ETAG`, `EXPORTJOBS_SOURCE_VERSION_ID`);
- `finish`: one pod, `--finish-ranges`, the ranges' result JSON given as an annotation read as a
  file (up to N x 4 KiB: too long for one environment value), and the pinned version as the
  ranges got it;
- `clean`: one pod, `--clean-ranges`, after a failure or a cancel, once no range pod is left:
  no part objects and no open multipart uploads remain.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from export_operator import resource
from export_operator.controller.snapshots import PROCESSOR_CONTAINER
from export_operator.controller.split_plan import (
    NOT_PREPARED,
    Prepared,
    SplitPlan,
    step_job_name,
)
from export_operator.resource import ExitCode

RESULTS_DIR = "/etc/exportjobs/ranges"
RESULTS_FILE = "results.json"
STEP_ARGS = {"prepare": ["--prepare-ranges"], "clean": ["--clean-ranges"]}
FINISHED_INDEXES = ("FailedIndexes", "MaxFailedIndexesExceeded")
"""Reasons of a ranges Job that failed only because some indexes did: the finishing step
converts those ranges again (or the export as one pod), so the export goes on."""


def exit_codes(operator: str, codes: Sequence[ExitCode]) -> dict[str, Any]:
    """A `podFailurePolicy` rule's `onExitCodes` for the processor's container."""
    values = [int(c) for c in codes]
    return {"containerName": PROCESSOR_CONTAINER, "operator": operator, "values": values}


def ranges_pod_failure_policy() -> dict[str, Any]:
    """Source missing (3) fails the Job at once; bad input (2: maybe a wrongly guessed row
    boundary) fails only its index, which the finishing step converts again from the verified
    boundary; disruptions are retried free; anything else counts against the index's
    `backoffLimitPerIndex`."""
    done = (ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.SOURCE_MISSING)
    return {
        "rules": [
            {"action": "FailJob", "onExitCodes": exit_codes("In", [ExitCode.SOURCE_MISSING])},
            {"action": "FailIndex", "onExitCodes": exit_codes("In", [ExitCode.BAD_INPUT])},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": exit_codes("NotIn", done)},
        ]
    }


PINNED_ENV = {
    "EXPORTJOBS_SOURCE_ETAG": resource.ANNOTATION_SOURCE_ETAG,
    "EXPORTJOBS_SOURCE_VERSION_ID": resource.ANNOTATION_SOURCE_VERSION_ID,
}
"""The source version every step after `prepare` reads: the one `prepare` pinned (the spec's
`etag` and `versionId`, when given, are what `prepare` checked and reports)."""


def _from_annotation(name: str, annotation: str) -> dict[str, Any]:
    path = f"metadata.annotations['{annotation}']"
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _split_common(job: dict[str, Any], step: str, ranges: int) -> dict[str, Any]:
    """Label a copy of the whole Job with its step; the env every step reads."""
    job = copy.deepcopy(job)
    meta, template = job["metadata"], job["spec"]["template"]
    meta["labels"][resource.LABEL_STEP] = step
    meta.setdefault("annotations", {})[resource.ANNOTATION_RANGES] = str(ranges)
    template["metadata"]["labels"][resource.LABEL_STEP] = step
    container = template["spec"]["containers"][0]
    container["env"] += [
        {"name": "EXPORTJOBS_RANGE_COUNT", "value": str(ranges)},
        _from_annotation("EXPORTJOBS_RANGE_UPLOAD_ID", resource.ANNOTATION_UPLOAD_ID),
    ]
    if step != "prepare":
        env = [e for e in container["env"] if e["name"] not in PINNED_ENV]
        container["env"] = env + [_from_annotation(n, a) for n, a in PINNED_ENV.items()]
    return job


def ranges_job(
    whole: dict[str, Any], split: SplitPlan, *, resources: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The Indexed Job converting the ranges, suspended until `prepare` has pinned the source
    (and opened the upload)."""
    job = _split_common(whole, "ranges", split.ranges)
    spec = job["spec"]
    backoff = spec.pop("backoffLimit")
    spec.update(
        {
            "completionMode": "Indexed",
            "completions": split.ranges,
            "parallelism": split.parallelism,
            "backoffLimitPerIndex": backoff,
            "maxFailedIndexes": split.ranges,
            "podFailurePolicy": ranges_pod_failure_policy(),
            "suspend": True,
        }
    )
    spec["template"]["spec"]["containers"][0]["resources"] = resources
    return job


def step_job(
    whole: dict[str, Any],
    step: str,
    *,
    export_name: str,
    ranges: int,
    prepared: Prepared = NOT_PREPARED,
    results: str = "",
) -> dict[str, Any]:
    """The `prepare`, `finish` or `clean` Job (one pod, the whole export's resources and
    failure policy: the finishing step may convert ranges again, or the whole export)."""
    job = _split_common(whole, step, ranges)
    job["metadata"]["name"] = step_job_name(export_name, step)
    template = job["spec"]["template"]
    container = template["spec"]["containers"][0]
    if step in STEP_ARGS:
        container["args"] = STEP_ARGS[step]
    if step != "prepare":
        template["metadata"].setdefault("annotations", {}).update(prepared.annotations())
    if step == "finish":
        template["metadata"]["annotations"][resource.ANNOTATION_RANGE_RESULTS] = results
        path = f"metadata.annotations['{resource.ANNOTATION_RANGE_RESULTS}']"
        template["spec"]["volumes"].append(
            {
                "name": "ranges",
                "downwardAPI": {"items": [{"path": RESULTS_FILE, "fieldRef": {"fieldPath": path}}]},
            }
        )
        container["volumeMounts"].append(
            {"name": "ranges", "mountPath": RESULTS_DIR, "readOnly": True}
        )
        container["env"].append(
            {"name": "EXPORTJOBS_RANGE_RESULTS", "value": f"{RESULTS_DIR}/{RESULTS_FILE}"}
        )
    return job


def resume_patch(prepared: Prepared) -> dict[str, Any]:
    """The merge patch that starts a suspended ranges Job with what `prepare` reported."""
    annotations = prepared.annotations()
    return {"spec": {"suspend": False, "template": {"metadata": {"annotations": annotations}}}}


def results_document(payloads: Sequence[tuple[int, dict[str, Any]]]) -> str:
    """The finishing step's input: `[{"index": i, "payload": <range i's result or error>}]`."""
    items = [{"index": i, "payload": p} for i, p in sorted(payloads, key=lambda x: x[0])]
    return json.dumps(items, separators=(",", ":"), sort_keys=True)
