"""bench/soak.py for a few minutes on the installed product (the hour's run: docs/benchmarks.md):
mixed API and S3-event load, 100 MB exports, a callback receiver failing 20 % of deliveries and
an operator failover; nothing lost, nothing run twice, no 5xx.

EXPORTJOBS_SOAK_SECONDS sets the length (default 180).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_stack import INPUT_BUCKET, E2ECluster
from tests.support.hack_modules import load

pytestmark = pytest.mark.timeout(1500)


def test_a_short_soak_loses_nothing_and_runs_nothing_twice(
    product: Any, e2e_cluster: E2ECluster, e2e_s3: Any, tmp_path: Path
) -> None:
    soak = load("soak", "bench")
    seconds = float(os.environ.get("EXPORTJOBS_SOAK_SECONDS", "180"))
    url, secret, events = soak.start_receiver(tmp_path / "callbacks", 0.2)
    try:
        product.upgrade(soak.soak_values(secret))
        target = soak.Target(
            url=lambda: product.webhook_url,
            token=product.token,
            namespace=product.namespace,
            kubectl=lambda *args: e2e_cluster.kubectl(*args),
            s3=e2e_s3,
            input_bucket=INPUT_BUCKET,
            callback_url=url,
            callback_events=events,
        )
        report = soak.run(
            target,
            seconds=seconds,
            window_seconds=60,
            failover_seconds=min(600.0, seconds / 2),
            big_every_seconds=60,
            drain_seconds=300,
        )
    finally:
        soak.stop_receiver(tmp_path / "callbacks")
        product.upgrade({})
    print(json.dumps(report, indent=1))
    assert report["failures"] == [], report["failures"]
    assert report["lost"] == 0 and report["doubled"] == 0 and report["server_errors"] == 0
    assert report["failovers"] >= 1
    assert report["kinds"].get("big", 0) >= 2 and report["kinds"].get("event", 0) >= 10
    assert report["phases"].get("Succeeded", 0) >= 20
