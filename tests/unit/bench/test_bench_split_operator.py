"""bench/bench_split_operator.py's kubelet stand-in without a cluster: what each step's pod of a
split export answers, read back as the operator and the finishing step read it."""

from __future__ import annotations

import itertools
import json

from export_operator import termination
from export_processor.ranges import RangeReport
from tests.support.hack_modules import load

bench = load("bench_split_operator", "bench")
LABELS = {"exportjobs.dev/export": "x-00001"}


def _message(step: str, index: int | None = None, fmt: str = "jsonl") -> str:
    annotations = {} if index is None else {bench.COMPLETION_INDEX: str(index)}
    return str(bench.step_message({**LABELS, bench.LABEL_STEP: step}, annotations, fmt, 8))


def test_each_step_answers_as_its_processor() -> None:
    assert json.loads(_message("prepare")) == {"uploadId": "upload-x-00001"}
    reports = [RangeReport.from_json(json.loads(_message("ranges", i))["range"]) for i in range(8)]
    assert [r.index for r in reports] == list(range(8))
    # Contiguous ranges, as verified ones are: each ends where the next starts.
    assert all(a.end == b.start for a, b in itertools.pairwise(reports))
    assert reports[0].upload is not None and reports[0].upload["first"] == 1
    for text in (_message("ranges", 3), _message("finish")):
        result = termination.read_result(text)
        assert result is not None and result.format == "jsonl"
    final = json.loads(_message("finish"))
    assert final["rows"] == 8 * bench.ROWS_PER_RANGE
    assert final["split"]["partBytes"] == [bench.BYTES_PER_RANGE] * 8
    parquet = json.loads(_message("ranges", 2, fmt="parquet"))
    assert "upload" not in parquet["range"]
