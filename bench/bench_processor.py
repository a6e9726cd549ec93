"""Processor benchmark: S3 -> S3 through the local MinIO, per format, against same-run baselines.

    source .local/cluster.env   # or let the script read .local/cluster.env itself
    .venv/bin/python bench/bench_processor.py              # ~800 MB input, all formats
    .venv/bin/python bench/bench_processor.py --mb 3000 --no-baselines
    .venv/bin/python bench/bench_processor.py --late-change --formats jsonl,parquet
    .venv/bin/python bench/bench_processor.py --repeat 5 --keep-data   # medians of 5 pairs
    .venv/bin/python bench/bench_processor.py --local --keep-data      # file -> file, no S3

Prints, for each format, throughput (input MB per wall second) and the processor's peak RSS, and
the ratio to its baseline, measured right after it (the machine is shared: back to back is the
fairest; `--repeat N` runs N such pairs per format and reports the median rates and the median of
the pairs' ratios, since a single pair moves by ±20% on two shared cores): DuckDB local file ->
local file (threads = cores) for parquet, jsonl and csv; `gzip -1` on one core for csv.gz; then
a raw S3 copy (download + upload, no parsing). Each line carries the 1-minute load average.

CPU: each line also gives the CPU seconds (user + kernel) of the processor, of the S3 server over
the processor's run (the local MinIO, found by .local/s3/minio.pid; `-` for another server) and of
the baseline. The S3 server shares the machine's cores with the processor, while DuckDB's
baseline reads and writes local files: `(processor + S3 server) CPU / DuckDB CPU` says how much
of the two cores the S3 -> S3 export needs against DuckDB's local run.

--local: the processor reads and writes local files too (file:// source and destination), the
same footing as DuckDB's baseline: the processor's own speed, without the S3 server.

--late-change: the same input with one row at 90% of it whose integer column says `n/a`, against
the input without it: the column widens to text there, so the export reads the source twice (the
first read settles the types, the second writes once); prints both times, their ratio and the
bytes read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.support.cluster import read_env_file  # noqa: E402

from gen_csv import generate  # noqa: E402
from processor_threads import cpu_text, s3_server_cpu  # noqa: E402

FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]
GOALS = {"csv": 0.8, "jsonl": 0.8, "parquet": 0.8, "csv.gz": 1.5}
RSS_GOAL_MIB = 300
UPLOAD = TransferConfig(multipart_chunksize=64 << 20)


def children_cpu() -> float:
    """CPU seconds (user + kernel) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One timed run: wall seconds and CPU seconds (its own; the S3 server's during it)."""

    seconds: float
    cpu: float
    s3_cpu: float | None = None


def run_processor(
    env: dict[str, str], source: str, fmt: str, dest: str
) -> tuple[Run, float, dict[str, object]]:
    """The run, peak RSS (MiB) and the result JSON of one `exportjobs-processor` run (to a
    local destination: its previous output removed first, as DuckDB's)."""
    local = dest.startswith("file://")
    settle(Path(dest.removeprefix("file://")) if local else None)
    cpu_before, s3_before = children_cpu(), None if local else s3_server_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(REPO / ".venv/bin/exportjobs-processor"),
            "--source",
            source,
            "--format",
            fmt,
            "--destination",
            dest,
        ],
        env=env,
        stdout=subprocess.PIPE,
    )
    peak = PeakRss(proc.pid)
    assert proc.stdout is not None
    output = proc.stdout.read()
    status = proc.wait()
    elapsed = time.monotonic() - started
    s3_after = None if local else s3_server_cpu()
    if status != 0:
        raise SystemExit(f"processor failed for {fmt}")
    s3_cpu = s3_after - s3_before if s3_after is not None and s3_before is not None else None
    run = Run(elapsed, children_cpu() - cpu_before, s3_cpu)
    return run, peak.stop(), json.loads(output)


class PeakRss:
    """The peak RSS (VmHWM) of a running process, polled from /proc every 20 ms.

    Not the child's ru_maxrss: Linux counts in it the parent's RSS at fork (the exec'd image
    replaces a copy of the bench process, which holds boto3 and the input upload), which made
    a 260 MiB processor run read 750 MiB.
    """

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.02):
            try:
                text = self._status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self._peak = max(self._peak, int(line.split()[1]))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self._peak / 1024


def load() -> str:
    return f"load {os.getloadavg()[0]:4.1f}"


def settle(out_dir: Path | None = None) -> None:
    """Start a timed run with nothing left of the previous one: its local output removed and
    every dirty page written back (`sync`). DuckDB's 1.3 GB of JSON Lines written to /tmp was
    still being flushed during the next processor run, the kernel's writeback competing with
    MinIO for the disk and the CPU."""
    if out_dir is not None:
        for leftover in out_dir.glob("*"):
            if leftover.is_file():
                leftover.unlink()
    os.sync()


def with_late_change(path: Path) -> Path:
    """A copy of `path` with one more row at 90% of it whose `quantity` (int) is `n/a`."""
    late = path.with_name(path.stem + "-late-change.csv")
    if late.exists() and late.stat().st_size > path.stat().st_size:
        return late
    cut = int(path.stat().st_size * 0.9)
    row = b'0,late,2024-01-01T00:00:00Z,1.00,books,DE,n/a,late@example.com,"late"\r\n'
    with path.open("rb") as src, late.open("wb") as out:
        left = cut
        while left:
            chunk = src.read(min(left, 64 << 20))
            out.write(chunk)
            left -= len(chunk)
        # Rows end with CRLF; values hold bare LFs only: the first CRLF ends a row.
        tail = src.read(1 << 20)
        boundary = tail.index(b"\r\n") + 2
        out.write(tail[:boundary] + row + tail[boundary:])
        shutil.copyfileobj(src, out, 64 << 20)
    return late


def late_change(args: argparse.Namespace, env: dict[str, str], s3: object, path: Path) -> None:
    late = with_late_change(path)
    dest = f"s3://{args.bucket}/bench-out/"
    keys = []
    for file in (path, late):
        s3.upload_file(str(file), args.bucket, file.name, Config=UPLOAD)  # type: ignore[attr-defined]
        keys.append(file.name)
    print("\nformat    plain s  late change s  ratio  bytes read (x source)  peak RSS MiB")
    for fmt in args.formats.split(","):
        plain_run, _, _ = run_processor(env, f"s3://{args.bucket}/{keys[0]}", fmt, dest)
        changed_run, rss, result = run_processor(env, f"s3://{args.bucket}/{keys[1]}", fmt, dest)
        plain, changed = plain_run.seconds, changed_run.seconds
        reads = float(str(result["bytesRead"])) / late.stat().st_size
        print(
            f"{fmt:8s} {plain:8.1f}  {changed:13.1f}  {changed / plain:5.2f}  {reads:21.2f}"
            f"  {rss:12.0f}  {load()}",
            flush=True,
        )
    for key in keys:
        s3.delete_object(Bucket=args.bucket, Key=key)  # type: ignore[attr-defined]


def duckdb_local(path: Path, fmt: str, out_dir: Path) -> Run:
    """Seconds of DuckDB's COPY, in a process of its own (as the processor runs), start-up
    included, as the processor's are."""
    options = {
        "parquet": "(FORMAT parquet, COMPRESSION zstd)",
        "csv": "(FORMAT csv, HEADER true)",
        "jsonl": "(FORMAT json)",
    }[fmt]
    script = (
        "import duckdb\n"
        "con = duckdb.connect()\n"
        "con.execute('SET enable_progress_bar=false')\n"
        f"con.execute('SET threads={os.cpu_count() or 1}')\n"
        f"con.execute(\"COPY (SELECT * FROM read_csv('{path}', header=true)) "
        f"TO '{out_dir / ('duck.' + fmt)}' {options}\")\n"
    )
    settle(out_dir)
    cpu_before, started = children_cpu(), time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True)
    return Run(time.monotonic() - started, children_cpu() - cpu_before)


def gzip_one_core(path: Path, out_dir: Path) -> Run:
    settle(out_dir)
    cpu_before, started = children_cpu(), time.monotonic()
    with (out_dir / "gzip1.gz").open("wb") as out:
        subprocess.run(["gzip", "-1", "-c", str(path)], stdout=out, check=True)
    return Run(time.monotonic() - started, children_cpu() - cpu_before)


def raw_s3_copy(s3: object, bucket: str, key: str) -> float:
    config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
    started = time.monotonic()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]  # type: ignore[attr-defined]
    s3.upload_fileobj(body, bucket, f"bench-out/raw-copy-{key}", Config=config)  # type: ignore[attr-defined]
    return time.monotonic() - started


@dataclass
class Row:
    """One format's runs: rates, ratios, peak RSS and CPU seconds (medians in the summary)."""

    fmt: str
    rates: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    s3_cpus: list[float] = field(default_factory=list)
    bases: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    base_cpus: list[float] = field(default_factory=list)

    def add_processor(self, rate: float, rss: float, run: Run) -> None:
        self.rates.append(rate)
        self.peaks.append(rss)
        self.cpus.append(run.cpu)
        if run.s3_cpu is not None:
            self.s3_cpus.append(run.s3_cpu)

    def add_baseline(self, rate: float, ratio: float, cpu: float) -> None:
        self.bases.append(rate)
        self.ratios.append(ratio)
        self.base_cpus.append(cpu)

    def summary(self, raw: float) -> str:
        median = statistics.median
        rate, cpu, base_cpu = median(self.rates), median(self.cpus), median(self.base_cpus)
        s3_cpu = median(self.s3_cpus) if self.s3_cpus else None
        share = (cpu + (s3_cpu or 0.0)) / base_cpu
        return (
            f"{self.fmt:8s} {rate:6.1f}  {median(self.bases):8.1f}  {median(self.ratios):5.2f}"
            f"  >={GOALS[self.fmt]:.1f}  {rate / raw:14.2f}  {max(self.peaks):12.0f}"
            f"  {cpu:14.2f}  {cpu_text(s3_cpu):>9s}  {base_cpu:8.2f}  {share:28.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=800, help="input size in MB (default 800)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--bucket", default="exports-input")
    parser.add_argument("--keep-data", action="store_true", help="keep a >1 GB input afterwards")
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs (processor, baseline) per format (median)"
    )
    parser.add_argument(
        "--late-change", action="store_true", help="a type change at 90%% vs none (see above)"
    )
    parser.add_argument(
        "--local", action="store_true", help="the processor file -> file (see above)"
    )
    args = parser.parse_args()
    env = {**os.environ}
    if "AWS_ENDPOINT_URL" not in env:
        env.update(read_env_file(REPO / ".local" / "cluster.env"))
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    data_dir = REPO / "bench" / "data"
    path = generate(data_dir / f"mixed-{args.mb}mb.csv", megabytes=args.mb)
    size_mb = path.stat().st_size / 1e6
    s3 = boto3.client("s3")
    key = path.name
    s3.upload_file(str(path), args.bucket, key, Config=UPLOAD)
    source = f"s3://{args.bucket}/{key}"
    dest = f"s3://{args.bucket}/bench-out/"
    print(f"input: {source} ({size_mb:.0f} MB), {os.cpu_count()} cores, {load()}")
    if args.late_change:
        s3.delete_object(Bucket=args.bucket, Key=key)
        late_change(args, env, s3, path)
        return
    out_dir = Path("/tmp/exportjobs-bench")
    out_dir.mkdir(exist_ok=True)
    if args.local:
        source, dest = f"file://{path}", f"file://{out_dir}/processor/"
    rows: list[Row] = []
    for fmt in args.formats.split(","):
        row = Row(fmt)
        for attempt in range(args.repeat):
            run, rss, _ = run_processor(env, source, fmt, dest)
            rate = size_mb / run.seconds
            line = f"processor {fmt:8s} {rate:7.1f} MB/s  peak RSS {rss:6.0f} MiB"
            line += f"  ({'ok' if rss <= RSS_GOAL_MIB else 'OVER'} vs {RSS_GOAL_MIB} MiB)"
            line += f"  CPU {run.cpu:5.2f} s + S3 server {cpu_text(run.s3_cpu)}"
            row.add_processor(rate, rss, run)
            if not args.no_baselines:
                if fmt == "csv.gz":
                    base_run = gzip_one_core(path, out_dir)
                    line += "  | gzip -1 one core"
                else:
                    base_run = duckdb_local(path, fmt, out_dir)
                    line += "  | DuckDB local"
                baseline = size_mb / base_run.seconds
                line += f" {baseline:7.1f} MB/s  CPU {base_run.cpu:5.2f} s"
                line += f"  ratio {rate / baseline:4.2f} (goal >= {GOALS[fmt]})"
                row.add_baseline(baseline, rate / baseline, base_run.cpu)
            pair = f" [{attempt + 1}/{args.repeat}]" if args.repeat > 1 else ""
            print(f"{line}  {load()}{pair}", flush=True)
        rows.append(row)
    shutil.rmtree(out_dir, ignore_errors=True)
    if not args.no_baselines:
        raw = size_mb / raw_s3_copy(s3, args.bucket, key)
        print(f"baseline raw S3 copy            {raw:7.1f} MB/s  {load()}", flush=True)
        what = f"medians of {args.repeat} pairs, " if args.repeat > 1 else ""
        where = "file -> file" if args.local else "S3 -> S3"
        print(f"\n(processor {where}; {what}peak RSS: the highest; CPU in seconds)")
        print(
            "format    MB/s   baseline  ratio  goal   vs raw S3 copy  peak RSS MiB"
            "  CPU: processor  S3 server  baseline  (processor + S3) / baseline"
        )
        for row in rows:
            print(row.summary(raw))
    for obj in s3.list_objects_v2(Bucket=args.bucket, Prefix="bench-out/").get("Contents", []):
        s3.delete_object(Bucket=args.bucket, Key=obj["Key"])
    s3.delete_object(Bucket=args.bucket, Key=key)
    if args.mb > 1000 and not args.keep_data:
        path.unlink()


if __name__ == "__main__":
    main()
