"""bench/bench_split.py's figures without cgroups or S3: a cgroup's throttling read from its
cpu.stat (v1 and v2)."""

from __future__ import annotations

from tests.support.hack_modules import load

bench_split = load("bench_split", "bench")


def test_throttling_reads_cgroup_v1_nanoseconds_and_v2_microseconds() -> None:
    v1 = "nr_periods 600\nnr_throttled 250\nthrottled_time 12500000000\n"
    assert bench_split.throttling(v1) == bench_split.Throttling(600, 250, 12.5)
    v2 = (
        "usage_usec 9000000\nuser_usec 8000000\nsystem_usec 1000000\n"
        "nr_periods 300\nnr_throttled 30\nthrottled_usec 1500000\n"
    )
    assert bench_split.throttling(v2) == bench_split.Throttling(300, 30, 1.5)
    assert bench_split.throttling("") == bench_split.Throttling(0, 0, 0.0)
    assert bench_split.Throttling(600, 250, 12.5).text() == "throttled 250/600 periods, 12.5 s"
