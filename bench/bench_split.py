"""Split-export benchmark: one export as P processes of one range each, against one process, with
the same CPU limit per process (docs/benchmarks.md, "Split exports").

    source .local/cluster.env   # or let the script read .local/cluster.env itself
    flock /tmp/exportjobs-bench.lock .venv/bin/python bench/bench_split.py          # 3 GB
    flock /tmp/exportjobs-bench.lock .venv/bin/python bench/bench_split.py --rounds 2 --keep-input
    .venv/bin/python bench/bench_split.py --mb 800 --formats jsonl --parallel 2,4

Each process runs in a CPU cgroup of its own limited to `--cpu` cores (default 0.5: the CFS
quota a pod's `limits.cpu: 500m` gets from the kubelet, cgroup v1 `cpu.cfs_quota_us` or v2
`cpu.max`), so on two cores the S3 server and the rest keep a core of their own. For each
format, back to back: the whole export in one process (P = 1), then the split export: P range
processes at once (`--range-count P --range-index i`, after `--prepare-ranges`, which pins the
source's version they all read and, for csv and jsonl, opens the export's upload they write
into, as the operator runs them), then the finishing step (`--finish-ranges`, same limit), which
completes the upload (or writes Parquet's manifest). Prints wall seconds (the split's including
the preparation and the finishing step), the speed-up, each process's peak RSS against the
processor's 300 MiB bound, the processors' CPU seconds and the S3 server's CPU over the same
run, and the 1-minute load; under it, each process's own wall time (start to exit), CPU seconds,
its cgroup's throttling (periods throttled, seconds) and peak RSS: where the split's time goes.
`--rounds N` repeats the pairs and ends with each split's median speed-up. The input stays in
the bucket with `--keep-input` (a later run finds it and skips the upload).
Needs root (cgroups).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.support.cluster import read_env_file  # noqa: E402

from bench_processor import RSS_GOAL_MIB, UPLOAD, PeakRss, load, settle  # noqa: E402
from gen_csv import generate  # noqa: E402
from processor_threads import _stat_fields  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GOAL_SPEEDUP = 1.7
PERIOD_US = 100_000


class CpuLimit:
    """A CPU cgroup limited to `cores` (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`)."""

    def __init__(self, name: str, cores: float) -> None:
        quota = int(cores * PERIOD_US)
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        self.path = Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/cpu") / name
        self.path.mkdir(exist_ok=True)
        if v2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def enter(self) -> None:
        """Move the calling process into the cgroup (a Popen preexec_fn: before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttling(self) -> Throttling:
        try:
            return throttling((self.path / "cpu.stat").read_text())
        except OSError:
            return Throttling(0, 0, 0.0)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


@dataclass(frozen=True)
class Throttling:
    """A CPU cgroup's quota periods, those in which it was throttled, and for how long."""

    periods: int
    throttled: int
    seconds: float

    def text(self) -> str:
        return f"throttled {self.throttled}/{self.periods} periods, {self.seconds:.1f} s"


def throttling(stat: str) -> Throttling:
    """Read a cgroup's `cpu.stat`: v1 `throttled_time` (ns) or v2 `throttled_usec`."""
    values = {}
    for line in stat.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    if "throttled_usec" in values:
        seconds = values["throttled_usec"] / 1e6
    else:
        seconds = values.get("throttled_time", 0) / 1e9
    return Throttling(values.get("nr_periods", 0), values.get("nr_throttled", 0), seconds)


def s3_cpu(pid_file: Path) -> float | None:
    try:
        fields = _stat_fields(f"/proc/{pid_file.read_text().strip()}/stat")
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Proc:
    """One processor run: what it did (`step`), its result JSON, peak RSS (MiB), CPU seconds,
    wall seconds from its start to its exit, and its cgroup's throttling."""

    step: str
    payload: dict[str, object]
    rss: float
    cpu: float
    seconds: float
    throttled: Throttling

    def text(self) -> str:
        return (
            f"{self.step} {self.seconds:.1f} s, {self.cpu:.1f} CPU-s, {self.throttled.text()},"
            f" {self.rss:.0f} MiB"
        )


def start(step: str, argv: list[str], env: dict[str, str], cores: float) -> Callable[[], Proc]:
    """Start a processor in a CPU cgroup of its own limited to `cores`; returns a function that
    waits for it."""
    limit = CpuLimit(f"exportjobs-bench-split-{os.getpid()}-{time.monotonic_ns()}", cores)
    message = Path(f"/tmp/exportjobs-bench-split-{time.monotonic_ns()}.json")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(REPO / ".venv/bin/exportjobs-processor"),
            *argv,
            "--termination-message-path",
            str(message),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        preexec_fn=limit.enter,
    )
    peak = PeakRss(proc.pid)
    ended: list[tuple[float, int, float]] = []

    def reap() -> None:
        # wait4 as it ends (not when the bench gets to it): its own wall time, and its own
        # CPU (its threads' too).
        _, status, usage = os.wait4(proc.pid, 0)
        ended.append((time.monotonic(), status, usage.ru_utime + usage.ru_stime))

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()

    def wait() -> Proc:
        reaper.join()
        end, status, cpu = ended[0]
        proc.returncode = os.waitstatus_to_exitcode(status)
        throttled = limit.throttling()
        limit.remove()
        payload = json.loads(message.read_text()) if message.exists() else {}
        message.unlink(missing_ok=True)
        if proc.returncode != 0 and "range" not in payload:
            raise SystemExit(f"processor {argv} failed: {payload}")
        return Proc(step, payload, peak.stop(), cpu, end - started, throttled)

    return wait


@dataclass
class Measured:
    seconds: float
    runs: list[Proc]
    s3_cpu: float | None

    @property
    def rss(self) -> list[float]:
        return [r.rss for r in self.runs]

    @property
    def cpu(self) -> float:
        return sum(r.cpu for r in self.runs)

    @property
    def payload(self) -> dict[str, object]:
        return self.runs[-1].payload


def run_export(
    common: list[str], env: dict[str, str], parallel: int, cores: float, pid_file: Path
) -> Measured:
    settle()
    s3_before = s3_cpu(pid_file)
    started = time.monotonic()
    if parallel == 1:
        runs = [start("whole", common, env, cores)()]
    else:
        runs = []
        split = [*common, "--range-count", str(parallel)]
        # The source's version pinned and (but for Parquet) the export's upload opened first:
        # the ranges and the finishing step read that version and write into that upload.
        runs.append(start("prepare", [*split, "--prepare-ranges"], env, cores)())
        prepared = runs[-1].payload
        if prepared.get("uploadId"):
            split += ["--range-upload-id", str(prepared["uploadId"])]
        pinned = prepared.get("source")
        for flag, key in (("--source-etag", "etag"), ("--source-version-id", "versionId")):
            if isinstance(pinned, dict) and pinned.get(key):
                split += [flag, str(pinned[key])]
        waits = [
            start(f"range {i}", [*split, "--range-index", str(i)], env, cores)
            for i in range(parallel)
        ]
        ranges = [wait() for wait in waits]
        runs += ranges
        results = [{"index": i, "payload": r.payload} for i, r in enumerate(ranges)]
        finish_env = {**env, "EXPORTJOBS_RANGE_RESULTS": json.dumps(results)}
        runs.append(start("finish", split, finish_env, cores)())
    seconds = time.monotonic() - started
    s3_after = s3_cpu(pid_file)
    s3_used = s3_after - s3_before if s3_after is not None and s3_before is not None else None
    return Measured(seconds, runs, s3_used)


def clear(s3: object, bucket: str, prefix: str) -> None:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])  # type: ignore[attr-defined]
    for item in listed:
        s3.delete_object(Bucket=bucket, Key=item["Key"])  # type: ignore[attr-defined]


def uploaded(s3: Any, bucket: str, path: Path) -> None:
    """Put the input in the bucket, unless an object of its name and size is there already."""
    try:
        if s3.head_object(Bucket=bucket, Key=path.name)["ContentLength"] == path.stat().st_size:
            return
    except s3.exceptions.ClientError:
        pass
    s3.upload_file(str(path), bucket, path.name, Config=UPLOAD)


def warm(data_dir: Path, bucket: str, key: str) -> float:
    """Read the S3 server's files of the input once (MinIO keeps an object as files under
    `<data>/<bucket>/<key>/`), so that the first timed run does not read it from the disk while
    the later ones read it from the page cache: seconds taken. Best effort (0 when absent)."""
    started = time.monotonic()
    for path in sorted((data_dir / bucket / key).rglob("*")):
        with contextlib.suppress(OSError), path.open("rb") as stream:
            while stream.read(16 << 20):
                pass
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=3000, help="input size in MB (default 3000)")
    parser.add_argument("--input", type=Path, help="this CSV instead of a generated one")
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument("--parallel", default="2", help="split sizes to compare with 1 (2,4)")
    parser.add_argument("--rounds", type=int, default=1, help="P = 1 then the splits, N times")
    parser.add_argument("--cpu", type=float, default=0.5, help="cores per process (0.5)")
    parser.add_argument("--bucket", default="exports-input")
    parser.add_argument("--keep-input", action="store_true", help="leave the input in S3")
    parser.add_argument("--s3-pid-file", type=Path, default=REPO / ".local" / "s3" / "minio.pid")
    args = parser.parse_args()
    env = {**os.environ}
    if "AWS_ENDPOINT_URL" not in env:
        env.update(read_env_file(REPO / ".local" / "cluster.env"))
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    path = args.input or generate(
        REPO / "bench" / "data" / f"mixed-{args.mb}mb.csv", megabytes=args.mb
    )
    size_mb = path.stat().st_size / 1e6
    s3 = boto3.client("s3")
    uploaded(s3, args.bucket, path)
    warmed = warm(args.s3_pid_file.parent / "data", args.bucket, path.name)
    source = f"s3://{args.bucket}/{path.name}"
    print(f"input: {source} ({size_mb:.0f} MB), {os.cpu_count()} cores, {args.cpu} cores per")
    print(f"process, the S3 server's files of it read once in {warmed:.1f} s, {load()}")
    speedups: dict[tuple[str, int], list[float]] = {}
    for round_number in range(1, args.rounds + 1):
        for fmt in args.formats.split(","):
            common = ["--source", source, "--format", fmt, "--export-name", "bench-split"]
            baseline: Measured | None = None
            for parallel in [1, *(int(p) for p in args.parallel.split(","))]:
                dest = f"s3://{args.bucket}/bench-split-{parallel}/"
                clear(s3, args.bucket, f"bench-split-{parallel}/")
                got = run_export(
                    [*common, "--destination", dest], env, parallel, args.cpu, args.s3_pid_file
                )
                clear(s3, args.bucket, f"bench-split-{parallel}/")
                baseline = baseline or got
                speedup = baseline.seconds / got.seconds
                if parallel > 1:
                    speedups.setdefault((fmt, parallel), []).append(speedup)
                print(describe(round_number, fmt, parallel, got, size_mb, speedup), flush=True)
                for run in got.runs:
                    print(f"    {run.text()}", flush=True)
    for (fmt, parallel), ratios in speedups.items():
        best = statistics.median(ratios)
        print(
            f"{fmt:8s} P={parallel}: x{', x'.join(f'{r:.2f}' for r in ratios)}; median "
            f"x{best:.2f} ({'ok' if best >= GOAL_SPEEDUP else 'UNDER'} vs {GOAL_SPEEDUP})  "
            f"{load()}",
            flush=True,
        )
    if not args.keep_input:
        s3.delete_object(Bucket=args.bucket, Key=path.name)


def describe(
    round_number: int, fmt: str, parallel: int, got: Measured, size_mb: float, speedup: float
) -> str:
    rss = max(got.rss)
    s3_text = "-" if got.s3_cpu is None else f"{got.s3_cpu:.1f}"
    line = (
        f"{round_number}: {fmt:8s} P={parallel}  {got.seconds:6.1f} s"
        f"  {size_mb / got.seconds:6.1f} MB/s  x{speedup:4.2f}"
    )
    if parallel > 1:
        line += f" ({'ok' if speedup >= GOAL_SPEEDUP else 'UNDER'} vs {GOAL_SPEEDUP})"
        split = got.payload.get("split")
        line += f"  split {json.dumps(split)[:80]}" if split else ""
    return line + (
        f"  peak RSS {' '.join(f'{r:.0f}' for r in got.rss)} MiB"
        f" ({'ok' if rss <= RSS_GOAL_MIB else 'OVER'} vs {RSS_GOAL_MIB})"
        f"  CPU {got.cpu:.1f} s + S3 server {s3_text} s  {load()}"
    )


if __name__ == "__main__":
    main()
