"""What the processor costs before its buffers: the peak RSS, wall and CPU time of an export of a
1,000-row CSV (a few KiB: every byte read and written at once), per format, S3 -> S3 through the
local MinIO, and of a split export's preparing step. An export's peak is the interpreter with
pyarrow, botocore, isal and the settings' libraries imported and their threads started: the
figure behind `BASELINE_BYTES` (docs/benchmarks.md, "Figures behind constants").

    source .local/cluster.env
    .venv/bin/python bench/processor_baseline.py                      # this checkout, 8 rounds
    .venv/bin/python bench/processor_baseline.py --against /tmp/base  # and another tree's code

`--against DIR`: a checkout (or `git archive` of a commit) whose processor/ and operator/ run
through PYTHONPATH in the same venv, alternating with this one's each round: a change's cost,
measured on the same machine state. The peak is the child's own (wait4's ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parent.parent
STEPS = {fmt: ["--format", fmt] for fmt in ("csv", "csv.gz", "jsonl", "parquet")} | {
    "prepare": ["--format", "jsonl", "--range-count", "2", "--prepare-ranges"]
}
"""An export per format, and a split export's preparing step (no pyarrow: its start is all)."""


def run(tree: Path, source: str, step: str, dest: str) -> tuple[float, float, float]:
    """Peak RSS (MiB), wall and CPU seconds of one step run with `tree`'s code."""
    env = {**os.environ, "PYTHONPATH": f"{tree}/processor:{tree}/operator"}
    command = [sys.executable, "-m", "export_processor.cli", "--source", source]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*command, *STEPS[step], "--destination", dest], env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"the processor failed ({tree}, {step})")
    cpu = usage.ru_utime + usage.ru_stime
    return usage.ru_maxrss / 1024, time.monotonic() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--against", type=Path, help="another tree's code, alternating")
    parser.add_argument("--bucket", default="exports-input")
    args = parser.parse_args()
    rows = "".join(f"{i},name {i},{i}.5,2024-01-{i % 28 + 1:02d}\n" for i in range(1000))
    s3 = boto3.client("s3")
    s3.put_object(Bucket=args.bucket, Key="baseline.csv", Body=f"id,name,x,d\n{rows}".encode())
    source, dest = f"s3://{args.bucket}/baseline.csv", f"s3://{args.bucket}/baseline-out/"
    trees = {"this": REPO, **({"against": args.against.resolve()} if args.against else {})}
    got: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    print(f"{args.rounds} rounds, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for round_ in range(args.rounds):
        for step in STEPS:
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                got.setdefault((step, name), []).append(run(trees[name], source, step, dest))
    print(f"load {os.getloadavg()[0]:.1f}")
    print("step     code      peak RSS MiB (median, range)  wall s  CPU s")
    for (step, name), runs in got.items():
        rss = [r[0] for r in runs]
        wall = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        span = f"{statistics.median(rss):6.1f} ({min(rss):.1f}-{max(rss):.1f})"
        print(f"{step:8s} {name:8s}  {span:28s}  {wall:6.3f}  {cpu:5.3f}")
    for obj in s3.list_objects_v2(Bucket=args.bucket, Prefix="baseline-out/").get("Contents", []):
        s3.delete_object(Bucket=args.bucket, Key=obj["Key"])
    s3.delete_object(Bucket=args.bucket, Key="baseline.csv")


if __name__ == "__main__":
    main()
