"""`helm upgrade` and `helm rollback` with work in flight: from the chart of the previous commit to
this one, and a values change that rolls both Deployments, while exports are queued or running
and S3 events arrive. None is lost, none runs twice, the queue keeps its order and every callback
is delivered once (hack/callback_receiver.py counts).

EXPORTJOBS_UPGRADE_EXPORTS sets the exports posted before each step (default 50).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FINAL, INPUT_BUCKET, E2ECluster, answering, call
from tests.support.cluster import REPO
from tests.support.hack_modules import load
from tests.support.strategies import s3_event

pytestmark = pytest.mark.timeout(1500)

RELEASE = "exportjobs"
MAX_RUNNING = 3


def _previous_chart(tmp_path: Path) -> Path:
    """charts/exportjobs of the commit before this tree's HEAD, in a temporary folder."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD~1", "charts/exportjobs"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    return tmp_path / "charts" / "exportjobs"


def _helm(cluster: E2ECluster, *args: str) -> str:
    done = subprocess.run(
        ["helm", *args], env=cluster.env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Events:
    """S3 events for fresh objects, one a second, in a thread, until stopped; the ids answered."""

    def __init__(self, product: Any, s3: Any) -> None:
        self.product, self.s3 = product, s3
        self.ids: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = b"id,name\n1,a\n2,b\n"
        while not self._stop.wait(1.0):
            key = f"upgrade/{uuid.uuid4().hex[:10]}.csv"
            self.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)
            try:
                status, answer = call(
                    self.product,
                    "POST",
                    "/v1/events/s3?format=jsonl",
                    s3_event(INPUT_BUCKET, key, len(body)),
                )
            except OSError as exc:  # the port-forward's pod went away: a client retries
                self.errors.append(str(exc))
                continue
            if status == 202:
                self.ids.extend(answer["ids"])
            elif status >= 500 and status != 503:
                self.errors.append(f"{status} {answer}")

    def __enter__(self) -> Events:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _wait_final(product: Any, ids: list[str], within: float = 900) -> dict[str, Any]:
    views: dict[str, Any] = {}
    deadline = time.monotonic() + within
    while len(views) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(views)} exports never finished"
        for export_id in ids:
            if export_id in views:
                continue
            try:
                status, view = call(product, "GET", f"/v1/exports/{export_id}")
            except OSError:  # the port-forward's pod went away; it is started again
                time.sleep(1)
                continue
            assert status == 200, (export_id, view)
            if view["status"] in FINAL:
                views[export_id] = view
        time.sleep(1)
    return views


def _check(
    cluster: E2ECluster,
    product: Any,
    posted: list[str],
    events: Events,
    callbacks: Path,
) -> None:
    ids = posted + events.ids
    views = _wait_final(product, ids)
    assert Counter(v["status"] for v in views.values()) == {"Succeeded": len(ids)}
    assert events.errors == []
    # Nothing ran twice: one Succeeded pod per export (the Jobs keep them for an hour).
    pods = cluster.kubectl_json(
        "-n", product.namespace, "get", "pods", "-l", "exportjobs.dev/export"
    )["items"]
    succeeded = Counter(
        p["metadata"]["labels"]["exportjobs.dev/export"]
        for p in pods
        if p["status"].get("phase") == "Succeeded"
    )
    assert {i: succeeded[i] for i in ids} == dict.fromkeys(ids, 1)
    # The queue kept its order: the posted exports started in the order they were accepted.
    objects = {
        o["metadata"]["name"]: o
        for o in cluster.kubectl_json("-n", product.namespace, "get", "exportjobs")["items"]
    }
    starts = [objects[i]["status"]["startTime"] for i in posted]
    assert starts == sorted(starts)
    # Every posted export's callback delivered (answered 2xx) exactly once.
    deadline = time.monotonic() + 120
    while True:
        delivered = Counter(
            str(r["event"]["subject"])
            for r in map(json.loads, callbacks.read_text().splitlines())
            if r.get("status", 204) < 300 and r.get("event")
        )
        if all(delivered[i] >= 1 for i in posted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {i: delivered[i] for i in posted} == dict.fromkeys(posted, 1)


def test_upgrade_and_rollback_with_exports_in_flight(
    product: Any, e2e_cluster: E2ECluster, e2e_s3: Any, tmp_path: Path
) -> None:
    soak = load("soak", "bench")
    count = int(os.environ.get("EXPORTJOBS_UPGRADE_EXPORTS", "50"))
    url, secret, events_file = soak.start_receiver(tmp_path / "callbacks", 0.0)
    ns = product.namespace
    e2e_s3.put_object(
        Bucket=INPUT_BUCKET,
        Key="upgrade/source.csv",
        Body=b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(1000)),
    )
    base = {
        "notifications": {
            "secrets": [secret],
            "allowlist": [f"{soak.NODE_ADDRESS}/32"],
            "allowHttp": True,
        },
        "operator": {"replicas": 2, "maxRunning": MAX_RUNNING},
    }
    values = tmp_path / "values.json"
    try:
        # The release as the previous commit's chart installs it.
        product.upgrade(base)
        answering(product)
        chart_values = json.loads((product.state_dir / "values.json").read_text())
        values.write_text(json.dumps(chart_values))
        old_chart = _previous_chart(tmp_path)
        _helm(
            e2e_cluster, "upgrade", RELEASE, str(old_chart), "-n", ns, "-f", str(values), "--wait"
        )
        revision_old = json.loads(_helm(e2e_cluster, "history", RELEASE, "-n", ns, "-o", "json"))[
            -1
        ]["revision"]

        # Upgrade to this chart, with pod annotations that roll both Deployments.
        rolled = {
            **chart_values,
            "webhook": {**chart_values.get("webhook", {}), "podAnnotations": {"soak/rev": "2"}},
            "operator": {**chart_values["operator"], "podAnnotations": {"soak/rev": "2"}},
        }
        values.write_text(json.dumps(rolled))
        posted = _post_source(product, count, url)
        with Events(product, e2e_s3) as events:
            _helm(
                e2e_cluster,
                "upgrade",
                RELEASE,
                str(REPO / "charts" / "exportjobs"),
                "-n",
                ns,
                "-f",
                str(values),
                "--wait",
                "--timeout",
                "300s",
            )
            time.sleep(3)
        _check(e2e_cluster, product, posted, events, events_file)

        # And back: helm rollback to the previous commit's chart, work in flight again.
        posted = _post_source(product, count, url)
        with Events(product, e2e_s3) as events:
            _helm(
                e2e_cluster,
                "rollback",
                RELEASE,
                str(revision_old),
                "-n",
                ns,
                "--wait",
                "--timeout",
                "300s",
            )
            time.sleep(3)
        _check(e2e_cluster, product, posted, events, events_file)
    finally:
        soak.stop_receiver(tmp_path / "callbacks")
        product.upgrade({})


def _post_source(product: Any, count: int, callback: str) -> list[str]:
    return [
        call(
            product,
            "POST",
            "/v1/exports",
            {
                "source": f"s3://{INPUT_BUCKET}/upgrade/source.csv",
                "format": "csv",
                "callback_url": callback,
            },
        )[1]["id"]
        for _ in range(count)
    ]
