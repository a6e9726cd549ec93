"""Processor benchmark: S3 -> S3 through the local MinIO, per format, against same-run baselines.

    source .local/cluster.env   # or let the script read .local/cluster.env itself
    .venv/bin/python bench/bench_processor.py              # ~800 MB input, all formats
    .venv/bin/python bench/bench_processor.py --mb 3000 --formats parquet,csv.gz --no-baselines

Prints, for each format, throughput (input MB per wall second) and the processor's peak RSS, and
the ratios to the baselines: DuckDB local file -> local file (threads = cores) for parquet, jsonl
and csv; `gzip -1` on one core for csv.gz; a raw S3 copy (download + upload, no parsing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.local_cluster import read_env_file  # noqa: E402

from gen_csv import generate  # noqa: E402

FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]
GOALS = {"csv": 0.8, "jsonl": 0.8, "parquet": 0.8, "csv.gz": 1.5}
RSS_GOAL_MIB = 300


def run_processor(env: dict[str, str], source: str, fmt: str, dest: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `exportjobs-processor` run."""
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
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"processor failed for {fmt}")
    return elapsed, usage.ru_maxrss / 1024


def duckdb_local(path: Path, fmt: str, out_dir: Path) -> float:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={os.cpu_count() or 1}")
    options = {
        "parquet": "(FORMAT parquet, COMPRESSION zstd)",
        "csv": "(FORMAT csv, HEADER true)",
        "jsonl": "(FORMAT json)",
    }[fmt]
    started = time.monotonic()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{path}', header=true)) "
        f"TO '{out_dir / ('duck.' + fmt)}' {options}"
    )
    return time.monotonic() - started


def gzip_one_core(path: Path, out_dir: Path) -> float:
    started = time.monotonic()
    with (out_dir / "gzip1.gz").open("wb") as out:
        subprocess.run(["gzip", "-1", "-c", str(path)], stdout=out, check=True)
    return time.monotonic() - started


def raw_s3_copy(s3: object, bucket: str, key: str) -> float:
    config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
    started = time.monotonic()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]  # type: ignore[attr-defined]
    s3.upload_fileobj(body, bucket, f"bench-out/raw-copy-{key}", Config=config)  # type: ignore[attr-defined]
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=800, help="input size in MB (default 800)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--bucket", default="exports-input")
    parser.add_argument("--keep-data", action="store_true", help="keep a >1 GB input afterwards")
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
    s3.upload_file(str(path), args.bucket, key, Config=TransferConfig(multipart_chunksize=64 << 20))
    source = f"s3://{args.bucket}/{key}"
    dest = f"s3://{args.bucket}/bench-out/"
    print(f"input: {source} ({size_mb:.0f} MB), {os.cpu_count()} cores")
    results: dict[str, tuple[float, float]] = {}
    for fmt in args.formats.split(","):
        seconds, rss = run_processor(env, source, fmt, dest)
        results[fmt] = (size_mb / seconds, rss)
        print(
            f"processor {fmt:8s} {size_mb / seconds:7.1f} MB/s  peak RSS {rss:6.0f} MiB"
            f"  ({'ok' if rss <= RSS_GOAL_MIB else 'OVER'} vs {RSS_GOAL_MIB} MiB)",
            flush=True,
        )
    if not args.no_baselines:
        out_dir = Path("/tmp/exportjobs-bench")
        out_dir.mkdir(exist_ok=True)
        baselines: dict[str, float] = {}
        for fmt in ("parquet", "jsonl", "csv"):
            baselines[fmt] = size_mb / duckdb_local(path, fmt, out_dir)
            print(f"baseline duckdb local {fmt:8s} {baselines[fmt]:7.1f} MB/s", flush=True)
        baselines["csv.gz"] = size_mb / gzip_one_core(path, out_dir)
        print(f"baseline gzip -1 (one core)     {baselines['csv.gz']:7.1f} MB/s", flush=True)
        raw = size_mb / raw_s3_copy(s3, args.bucket, key)
        print(f"baseline raw S3 copy            {raw:7.1f} MB/s", flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        print("\nformat    MB/s   baseline  ratio  goal   vs raw S3 copy  peak RSS MiB")
        for fmt, (rate, rss) in results.items():
            ratio = rate / baselines[fmt]
            print(
                f"{fmt:8s} {rate:6.1f}  {baselines[fmt]:8.1f}  {ratio:5.2f}  >={GOALS[fmt]:.1f}"
                f"  {rate / raw:14.2f}  {rss:12.0f}"
            )
    for obj in s3.list_objects_v2(Bucket=args.bucket, Prefix="bench-out/").get("Contents", []):
        s3.delete_object(Bucket=args.bucket, Key=obj["Key"])
    s3.delete_object(Bucket=args.bucket, Key=key)
    if args.mb > 1000 and not args.keep_data:
        path.unlink()


if __name__ == "__main__":
    main()
