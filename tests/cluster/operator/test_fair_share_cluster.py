"""Issue 24 on the real API server: principal A has 2,000 exports queued, then B posts one; B's
export gets the next free slot (first in, first out would have made it wait for all of A's)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.support.operator_process import Exports, OperatorProcess
from tests.support.wait import wait_for

RESULT = {"uri": "s3://out/reports/x/x.csv", "bytes": 1, "rows": 1, "sha256": "ab" * 32,
          "format": "csv"}  # fmt: skip


def test_a_late_owner_gets_the_next_free_slot(exports: Exports, operator: OperatorProcess) -> None:
    operator.start(max_running=1)
    a_names = [f"a-{i:04d}" for i in range(2000)]
    exports.create(a_names[0], owner="team-a")
    first = exports.wait_pod(a_names[0], timeout=60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: exports.create(n, owner="team-a"), a_names[1:]))
    wait_for("A's backlog queued", lambda: exports.status(a_names[-1]).get("phase") == "Queued",
             timeout=300)  # fmt: skip
    exports.create("b-0001", owner="team-b")
    wait_for("B queued", lambda: exports.status("b-0001").get("phase") == "Queued", timeout=60)
    exports.run_pod(first)
    exports.finish_pod(first, exit_code=0, message=json.dumps(RESULT))
    wait_for("B's Job at the next free slot", lambda: exports.job("b-0001"), timeout=240)
    assert exports.job(a_names[1]) is None, "A's next export took the slot instead"
