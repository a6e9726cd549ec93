"""Where one processor run spends its CPU: per thread (user, kernel, page faults), the S3 server's
CPU over the same run, peak RSS and the machine's idle time.

    .venv/bin/python bench/processor_threads.py --source s3://exports-input/mixed-800mb.csv \\
        --format parquet --destination s3://exports-output/threads/
    EXPORTJOBS_BLOCKS_AHEAD=4 .venv/bin/python bench/processor_threads.py ...   # any setting

Runs the processor's own entry point in this process, with a sampler thread reading
/proc/self/task every 50 ms (a thread's counters are kept after it ends), reads the S3 server's
CPU (the local MinIO, by hack/cluster.sh's pid file) before and after, and /proc/stat for the
whole machine. The AWS_* variables come from .local/cluster.env when they are not set.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.cluster import read_env_file  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str]:
    return Path(path).read_text().rsplit(")", 1)[1].split()


def s3_server_cpu() -> float | None:
    """CPU seconds of the local S3 server (the MinIO hack/cluster.sh started, by its pid file),
    None when there is none on this machine."""
    pid_file = REPO / ".local" / "s3" / "minio.pid"
    try:
        fields = _stat_fields(f"/proc/{pid_file.read_text().strip()}/stat")
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_text(seconds: float | None) -> str:
    return "    -" if seconds is None else f"{seconds:5.2f}"


def _machine() -> tuple[float, float]:
    """Busy and idle CPU seconds of the machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK, idle / TICK


class ThreadSampler:
    """Per-thread user/system CPU and minor faults of this process, by Python thread name (the
    pool's number dropped: `s3-read_2` counts as `s3-read`)."""

    def __init__(self) -> None:
        self.threads: dict[int, tuple[str, float, float, int]] = {}
        self.peak_rss = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            try:
                fields = _stat_fields(str(task / "stat"))
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            name = names.get(tid) or self.threads.get(tid, (f"{comm} (native)",))[0]
            base, _, number = name.rpartition("_")
            name = base if base and number.isdigit() else name
            user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
            self.threads[tid] = (name, user, system, int(fields[7]))
        rss = float(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self._sample()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def report(self) -> list[str]:
        totals: dict[str, list[float]] = {}  # user, system, faults, threads
        for name, user, system, faults in self.threads.values():
            row = totals.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            row[0] += user
            row[1] += system
            row[2] += faults
            row[3] += 1
        lines = [f"{'thread':24s} {'n':>3s} {'user s':>7s} {'kernel s':>8s} {'faults':>9s}"]
        for name, row in sorted(totals.items(), key=lambda item: -(item[1][0] + item[1][1])):
            if name != "sampler":
                lines.append(f"{name:24s} {row[3]:3.0f} {row[0]:7.2f} {row[1]:8.2f} {row[2]:9.0f}")
        return lines


def main() -> int:
    if "AWS_ENDPOINT_URL" not in os.environ:
        os.environ.update(read_env_file(REPO / ".local" / "cluster.env"))
    from export_processor.cli import run

    sampler = ThreadSampler()
    s3_before = s3_server_cpu()
    busy_before, idle_before = _machine()
    started = time.monotonic()
    sampler.start()
    try:
        code = run(sys.argv[1:])
    finally:
        sampler.stop()
    wall = time.monotonic() - started
    busy, idle = _machine()
    own = os.times()
    s3_after = s3_server_cpu()
    s3_cpu = s3_after - s3_before if s3_after is not None and s3_before is not None else None
    print(
        f"exit {code}, wall {wall:.2f} s, process {own.user + own.system:.2f} CPU-s "
        f"(kernel {own.system:.2f}), S3 server {cpu_text(s3_cpu).strip()} CPU-s, "
        f"machine busy {busy - busy_before:.2f} idle {idle - idle_before:.2f} CPU-s, "
        f"peak RSS {sampler.peak_rss / 2**20:.0f} MiB",
        file=sys.stderr,
    )
    print("\n".join(sampler.report()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
