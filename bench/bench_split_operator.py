"""Split exports through the operator on the simulated node (issue 23): N ExportJobs asking for
`parallelism` P, created at once, the bench playing the kubelet for every step's pods.

    source .local/cluster.env && .venv/bin/python bench/bench_split_operator.py        # 100 x 8
    .venv/bin/python bench/bench_split_operator.py --count 20 --parallelism 4 --format parquet

The operator (`exportjobs-operator`, a subprocess as deployed, no `maxRunning` limit unless
`--max-running`) watches a fresh namespace; the bench creates the ExportJobs (32 concurrent
requests) and answers each pod as its processor would: the `prepare` pod with an upload id,
each range of the Indexed Job with a range's result (docs/processor.md, "Splitting"), the
`finish` pod with the export's result and `split` summary. Figures, against the operator's
budgets (docs/benchmarks.md, "Operator"): create→Job latency (an ExportJob's create answered
→ its first Job seen by a watch) p50/p99, goal p99 ≤ 2 s; status patches per export (the
ExportJob's MODIFIED events: nothing else writes it here), goal ≤ 3; time until every export
Succeeded; the operator's CPU and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_operator import Backlog, _apply_crd, operator_env  # noqa: E402
from export_operator import kube, resource  # noqa: E402

LABEL_STEP = f"{resource.GROUP}/step"
"""A split export's step on its Jobs and pods (prepare, ranges, finish, clean)."""
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
ROWS_PER_RANGE = 1_000_000
BYTES_PER_RANGE = 100_000_000
PLAN = "0123456789abcdef"


def range_result(name: str, fmt: str, index: int, count: int) -> dict[str, Any]:
    """Range `index` of `count` of export `name`, as the processor reports it: rows from
    `index * BYTES_PER_RANGE`, its share of the export's upload (parquet: a part file)."""
    start, end = index * BYTES_PER_RANGE + 20, (index + 1) * BYTES_PER_RANGE + 20
    share = 9999 // count
    report: dict[str, Any] = {
        "index": index,
        "count": count,
        "start": start,
        "guessed": index > 0,
        "plan": PLAN,
        "end": end,
        "kinds": ["int64", "text"],
        "intBounds": {"0": [1, ROWS_PER_RANGE]},
    }
    if fmt != "parquet":
        first = 1 if index == 0 else index * share + 2
        report["upload"] = {"head": 0 if index == 0 else 8 << 20, "tail": 1 << 20}
        report["upload"] |= {"first": first, "last": first + 10}
    return {
        "uri": f"s3://bench-out/reports/{name}/{name}.{fmt}.parts/{index:05d}",
        "bytes": BYTES_PER_RANGE,
        "rows": ROWS_PER_RANGE,
        "sha256": f"{index:02x}" * 32,
        "format": fmt,
        "bytesRead": BYTES_PER_RANGE,
        "durationSeconds": 10.0,
        "range": report,
    }


def finish_result(name: str, fmt: str, count: int) -> dict[str, Any]:
    """The export's result after the finishing step."""
    return {
        "uri": f"s3://bench-out/reports/{name}/{name}.{fmt}",
        "bytes": count * BYTES_PER_RANGE,
        "rows": count * ROWS_PER_RANGE,
        "sha256": "cd" * 32,
        "format": fmt,
        "bytesRead": count * BYTES_PER_RANGE,
        "durationSeconds": 11.0,
        "split": {"ranges": count, "redone": [], "partBytes": [BYTES_PER_RANGE] * count},
    }


def step_message(
    pod_labels: dict[str, str], pod_annotations: dict[str, str], fmt: str, count: int
) -> str:
    """The termination message the processor of a split export's pod writes, by its step."""
    name = pod_labels[resource.LABEL_EXPORT]
    step = pod_labels.get(LABEL_STEP, "")
    if step == "prepare":
        payload: dict[str, Any] = {"uploadId": f"upload-{name}"}
    elif step == "ranges":
        payload = range_result(name, fmt, int(pod_annotations[COMPLETION_INDEX]), count)
    elif step == "clean":
        payload = {"cleaned": count}
    else:  # finish, or an export that ran whole
        payload = finish_result(name, fmt, count)
    return json.dumps(payload, separators=(",", ":"))


class SplitBurst(Backlog):
    """`count` ExportJobs of `parallelism` ranges each through the operator."""

    def __init__(
        self, api: Any, *, count: int, max_running: int, parallelism: int, fmt: str
    ) -> None:
        super().__init__(api, count=count, max_running=max_running)
        self.parallelism = parallelism
        self.fmt = fmt
        self.steps: dict[str, int] = {}

    async def warm_up(self) -> None:
        """One whole export through the operator before the clock starts (as the burst bench
        does): the figures are then the operator's, not its start-up's."""
        response = await self.custom.create_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            self.namespace,
            resource.PLURAL,
            super().body("warmup"),
            _preload_content=False,
        )
        await response.read()
        response.release()
        for _ in range(1200):
            if "warmup" in self.first_job:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the operator made no Job for the warm-up export in 120 s")

    def body(self, name: str) -> dict[str, Any]:
        body = super().body(name)
        body["spec"] |= {"format": self.fmt, "parallelism": self.parallelism}
        return body

    def message(self, pod: Any) -> str:
        labels = pod.metadata.labels or {}
        step = labels.get(LABEL_STEP, "whole")
        self.steps[step] = self.steps.get(step, 0) + 1
        annotations = pod.metadata.annotations or {}
        return step_message(labels, annotations, self.fmt, self.parallelism)


async def main_async(args: argparse.Namespace) -> int:
    api = await kube.new_api_client(trust_env=False)
    try:
        await _apply_crd(api)
        burst = SplitBurst(
            api,
            count=args.count,
            max_running=args.max_running,
            parallelism=args.parallelism,
            fmt=args.format,
        )
        env = operator_env(args.concurrency)
        env["EXPORTJOBS_OPERATOR_SPLIT_MAX_PARALLELISM"] = str(args.parallelism)
        f = await burst.run(env, concurrency=args.concurrency)
        print(
            f"{args.count} split exports x {args.parallelism} ranges ({args.format}), "
            f"maxRunning {args.max_running or 'none'}: all Succeeded in {f['total']:.1f} s "
            f"({f['succeeded']:.0f} Succeeded); create→Job p50 {f['p50'] * 1000:.0f} ms, "
            f"p99 {f['p99'] * 1000:.0f} ms (goal <= 2000 ms); status patches per export mean "
            f"{f['patches_mean']:.2f}, max {f['patches_max']} (goal <= 3); pods answered "
            f"{json.dumps(burst.steps, sort_keys=True)}; operator CPU {f['cpu']:.1f} s, "
            f"peak RSS {f['rss_mib']:.0f} MiB; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    finally:
        await api.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--format", default="jsonl", choices=["csv", "csv.gz", "jsonl", "parquet"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-running", type=int, default=0, help="0: no limit")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
