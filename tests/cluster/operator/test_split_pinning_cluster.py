"""One source version per split export, end to end without the real node: the operator and the
real job controller make the Jobs, and the test plays the kubelet by running the real processor
for each pod with the pod's own arguments and environment (its downward-API values resolved from
the pod's annotations) against the real S3 server. A source overwritten between two ranges
fails the export SOURCE_CHANGED and the clean-up step leaves nothing; in a versioned bucket the
export reads the version its prepare step pinned (issue 23)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.operator_process import Exports, OperatorProcess
from tests.support.processor_inputs import medium_csv
from tests.support.wait import wait_for

STEP = "exportjobs.dev/step"
FIELD = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]")
RESULTS_FILE = "/etc/exportjobs/ranges/results.json"


def _pod_env(pod: Any, message: Path) -> dict[str, str]:
    """The environment the kubelet would give the pod's container (downward API resolved; the
    ranges' results, mounted as a file in the pod, given inline)."""
    annotations = pod.metadata.annotations or {}
    fields = {"annotations": annotations, "labels": pod.metadata.labels or {}}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME") or k.startswith("AWS_")}
    for item in pod.spec.containers[0].env:
        if item.value is not None:
            env[item.name] = item.value
        elif item.value_from is not None and item.value_from.field_ref is not None:
            found = FIELD.fullmatch(item.value_from.field_ref.field_path)
            assert found, item.value_from.field_ref.field_path
            env[item.name] = fields[found.group(1)].get(found.group(2), "")
    if env.get("EXPORTJOBS_RANGE_RESULTS") == RESULTS_FILE:
        env["EXPORTJOBS_RANGE_RESULTS"] = annotations["exportjobs.dev/range-results"]
    env["EXPORTJOBS_TERMINATION_MESSAGE_PATH"] = str(message)
    return env


def play(exports: Exports, pod: Any, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """Run the real processor for `pod` and report its exit and termination message."""
    exports.run_pod(pod)
    message = tmp_path / f"{pod.metadata.name}.message"
    done = subprocess.run(
        [sys.executable, "-m", "export_processor.cli", *(pod.spec.containers[0].args or [])],
        env=_pod_env(pod, message),
        capture_output=True,
        text=True,
        timeout=180,
    )
    text = message.read_text() if message.exists() else ""
    exports.finish_pod(pod, exit_code=done.returncode, message=text)
    return done.returncode, json.loads(text) if text else {"stderr": done.stderr}


def _pods(exports: Exports, name: str, step: str) -> list[Any]:
    return [
        p
        for p in exports.pods(name)
        if (p.metadata.labels or {}).get(STEP) == step
        and p.metadata.deletion_timestamp is None
        and p.spec.node_name
        and p.status.phase == "Pending"
        and not p.status.container_statuses
    ]


def _one(exports: Exports, name: str, step: str) -> Any:
    [pod] = wait_for(f"the {step} pod of {name}", lambda: _pods(exports, name, step) or None)
    return pod


def _ranges(exports: Exports, name: str, count: int) -> list[Any]:
    pods = wait_for(
        f"{count} range pods",
        lambda: (p := _pods(exports, name, "ranges")) and len(p) == count and p,
    )
    index = "batch.kubernetes.io/job-completion-index"
    return sorted(pods, key=lambda p: int(p.metadata.annotations[index]))


def _left(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(o["Key"] for o in listed), [u["Key"] for u in uploads]


def _create(exports: Exports, name: str, bucket: str) -> None:
    exports.create(
        name,
        source={"uri": f"s3://{bucket}/in/data.csv"},
        destination={"uri": f"s3://{bucket}/out/"},
        format="jsonl",
        parallelism=2,
    )


def test_a_source_overwritten_between_ranges_fails_the_split_export_and_leaves_nothing(
    exports: Exports, operator: OperatorProcess, s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(40_000))
    operator.start(max_running=4)
    _create(exports, "moved", s3_bucket)
    code, prepared = play(exports, _one(exports, "moved", "prepare"), tmp_path)
    assert code == 0, prepared
    etag = s3_client.head_object(Bucket=s3_bucket, Key="in/data.csv")["ETag"]
    assert prepared["source"] == {"etag": etag}
    first, second = _ranges(exports, "moved", 2)
    assert first.metadata.annotations["exportjobs.dev/source-etag"] == etag
    code, result = play(exports, first, tmp_path)
    assert code == 0, result
    # Overwritten with as many bytes: only the version tells the two apart.
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(40_000)[::-1])
    code, result = play(exports, second, tmp_path)
    assert (code, result["error"]["code"]) == (3, "SOURCE_CHANGED"), result
    failed = exports.wait_phase("moved", "Failed")
    assert failed["error"]["code"] == "SOURCE_CHANGED"
    assert "changed" in failed["error"]["message"]
    code, cleaned = play(exports, _one(exports, "moved", "clean"), tmp_path)
    assert code == 0, cleaned
    assert _left(s3_client, s3_bucket) == ([], [])  # no part object, no open upload
    assert exports.status("moved")["phase"] == "Failed"


def test_a_versioned_source_overwritten_between_ranges_is_read_as_the_pinned_version(
    exports: Exports,
    operator: OperatorProcess,
    s3_client: Any,
    versioned_bucket: str,
    tmp_path: Path,
) -> None:
    bucket = versioned_bucket
    old = s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=medium_csv(40_000))
    operator.start(max_running=4)
    _create(exports, "kept", bucket)
    code, prepared = play(exports, _one(exports, "kept", "prepare"), tmp_path)
    assert code == 0, prepared
    assert prepared["source"] == {"etag": old["ETag"], "versionId": old["VersionId"]}
    first, second = _ranges(exports, "kept", 2)
    assert second.metadata.annotations["exportjobs.dev/source-version-id"] == old["VersionId"]
    assert play(exports, first, tmp_path)[0] == 0
    s3_client.put_object(Bucket=bucket, Key="in/data.csv", Body=medium_csv(50_000))
    assert play(exports, second, tmp_path)[0] == 0
    code, result = play(exports, _one(exports, "kept", "finish"), tmp_path)
    assert code == 0, result
    status = exports.wait_phase("kept", "Succeeded")
    assert status["result"]["rows"] == 40_000 and status["result"]["split"]["redone"] == []
    got = s3_client.get_object(Bucket=bucket, Key="out/kept/data.jsonl")["Body"].read()
    assert got.count(b"\n") == 40_000
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
