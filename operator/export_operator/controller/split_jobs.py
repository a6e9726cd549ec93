"""The Jobs of a split export, made from the whole export's Job (`jobs.build_job`).

Pure. A split export of N ranges has up to four Jobs, one after another (docs/api.md, "Split
exports"):

- `prepare` (csv, csv.gz, jsonl): one pod, `--prepare-ranges`, opens the export's multipart
  upload and reports its id in its termination message;
- `ranges`: the Indexed Job, named as a whole export's Job: completions N, parallelism P, each
  index converting one byte range (`JOB_COMPLETION_INDEX`). It is created at admission (so it
  holds its P slots from the start) and, when there is an upload to wait for, suspended; the
  operator resumes it with the upload id in its pod template's annotation, which the
  containers read through the downward API (a suspended Job's template annotations may change;
  its environment may not);
- `finish`: one pod, `--finish-ranges`, the ranges' result JSON given as an annotation read as a
  file (up to N x 4 KiB: too long for one environment value);
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
from export_operator.controller.split_plan import SplitPlan, step_job_name
from export_operator.resource import ExitCode

RESULTS_DIR = "/etc/exportjobs/ranges"
RESULTS_FILE = "results.json"
STEP_ARGS = {"prepare": ["--prepare-ranges"], "clean": ["--clean-ranges"]}
FINISHED_INDEXES = ("FailedIndexes", "MaxFailedIndexesExceeded")
"""Reasons of a ranges Job that failed only because some indexes did: the finishing step
converts those ranges again (or the export as one pod), so the export goes on."""


def _exit_codes(operator: str, codes: Sequence[ExitCode]) -> dict[str, Any]:
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
            {"action": "FailJob", "onExitCodes": _exit_codes("In", [ExitCode.SOURCE_MISSING])},
            {"action": "FailIndex", "onExitCodes": _exit_codes("In", [ExitCode.BAD_INPUT])},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": _exit_codes("NotIn", done)},
        ]
    }


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
        {
            "name": "EXPORTJOBS_RANGE_UPLOAD_ID",
            "valueFrom": {
                "fieldRef": {
                    "fieldPath": f"metadata.annotations['{resource.ANNOTATION_UPLOAD_ID}']"
                }
            },
        },
    ]
    return job


def _set_upload_id(job: dict[str, Any], upload_id: str) -> None:
    annotations = job["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[resource.ANNOTATION_UPLOAD_ID] = upload_id


def ranges_job(
    whole: dict[str, Any],
    split: SplitPlan,
    *,
    resources: dict[str, dict[str, str]],
    suspend: bool,
) -> dict[str, Any]:
    """The Indexed Job converting the ranges; `suspend` until the upload is prepared."""
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
        }
    )
    if suspend:
        spec["suspend"] = True
    spec["template"]["spec"]["containers"][0]["resources"] = resources
    return job


def step_job(
    whole: dict[str, Any],
    step: str,
    *,
    export_name: str,
    ranges: int,
    upload_id: str = "",
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
    if upload_id:
        _set_upload_id(job, upload_id)
    if step == "finish":
        template["metadata"].setdefault("annotations", {})[resource.ANNOTATION_RANGE_RESULTS] = (
            results
        )
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


def resume_patch(upload_id: str) -> dict[str, Any]:
    """The merge patch that starts a suspended ranges Job with the export's upload."""
    return {
        "spec": {
            "suspend": False,
            "template": {"metadata": {"annotations": {resource.ANNOTATION_UPLOAD_ID: upload_id}}},
        }
    }


def results_document(payloads: Sequence[tuple[int, dict[str, Any]]]) -> str:
    """The finishing step's input: `[{"index": i, "payload": <range i's result or error>}]`."""
    items = [{"index": i, "payload": p} for i, p in sorted(payloads, key=lambda x: x[0])]
    return json.dumps(items, separators=(",", ":"), sort_keys=True)
