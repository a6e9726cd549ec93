"""`helm upgrade` and `helm rollback` with work in flight (issue 22), on the real node.

One release goes from the chart of the previous commit to this tree's chart with a values change
that rolls both Deployments, then back by `helm rollback`; before each step
EXPORTJOBS_UPGRADE_EXPORTS exports (default 50, each with a completion callback) are posted at
`maxRunning` 5, so the step lands on exports queued and running, and S3 events for fresh objects
arrive all through it (each delivered until it is answered 202, as S3 and SNS redeliver). Then:
none lost (every export Succeeded), none run twice (one pod each), the queue order kept (the
posted exports started in the order they were accepted), every callback answered 2xx exactly once
(hack/callback_receiver.py's log), every event's object one export however often it came.

"The chart of the previous commit" is `charts/exportjobs` of HEAD~1 (git archive): the commit
that changes the chart is the one whose CI runs the upgrade from the chart before it. (With
uncommitted chart changes in the tree, HEAD's chart is the previous one; in a clone without the
parent commit, a shallow one, it is this tree's chart: the upgrade is then the values change
alone, and the test says so.) The images are this tree's in both: a rollback of the chart alone
must keep working with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import REPO
from tests.support.e2e_stack import FINAL, INPUT_BUCKET, E2ECluster, answering, call
from tests.support.hack_modules import load
from tests.support.strategies import s3_event
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(1500)

RELEASE = "exportjobs"
CHART = "charts/exportjobs"
MAX_RUNNING = 5
EVENT_EVERY_SECONDS = 2.0
SAME_PASS_SECONDS = 2
"""How far apart (startTime, whole seconds) the Jobs of one admission pass may start."""
EVENTS_AT_MOST = 20
"""S3 events per step (they queue behind the posted exports: kept few for the tier's time)."""


def previous_chart(tmp_path: Path) -> Path:
    """The chart of the previous commit (see the module's docstring), in `tmp_path`."""
    changed = subprocess.run(
        ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", CHART], check=False
    )
    commit = "HEAD" if changed.returncode else "HEAD~1"
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, CHART], capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(
            f"no {commit} to take the previous chart from (a shallow clone?): the upgrade is "
            f"this tree's chart with the values change alone "
            f"({archive.stderr.decode(errors='replace').strip()})"
        )
        return REPO / CHART
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    return tmp_path / CHART


def _helm(cluster: E2ECluster, *args: str) -> str:
    done = subprocess.run(
        ["helm", *args], env=cluster.env, capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


def _helm_wait(cluster: E2ECluster, namespace: str, *args: str) -> None:
    """A helm command on the release that returns once its Deployments are Ready."""
    started = time.monotonic()
    _helm(cluster, *args, "-n", namespace, "--wait", "--timeout", "300s")
    print(f"helm {args[0]}: {time.monotonic() - started:.0f} s")


def _settled(cluster: E2ECluster, product: Any) -> None:
    """No webhook or operator pod on its way out, then a fresh port-forward: a forward still
    bound to an old webhook pod is served with the values before the step (the first run of this
    test was refused its callback URL by an old pod without the allowlist)."""

    def old_pods_gone() -> bool:
        pods = cluster.kubectl_json(
            "-n",
            product.namespace,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component in (webhook,operator)",
        )["items"]
        return not any(p["metadata"].get("deletionTimestamp") for p in pods)

    wait_for("the old pods to go", old_pods_gone, timeout=180, interval=1)
    product.start_forward()
    answering(product)


@dataclass
class Events:
    """S3 events for fresh objects, one every EVENT_EVERY_SECONDS in a thread until stopped, each
    delivered until the webhook answers 202 (a port-forward whose pod went away, a 503 while a
    new pod's cache syncs: S3 and SNS deliver again). `ids[key]`: the ids answered for it."""

    product: Any
    s3: Any
    ids: dict[str, set[str]] = field(default_factory=dict)
    deliveries: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _deliver(self, event: dict[str, Any], key: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            self.deliveries += 1
            try:
                status, answer = call(self.product, "POST", "/v1/events/s3?format=jsonl", event)
            except (OSError, RuntimeError):  # no webhook pod to forward to for a moment
                time.sleep(1)
                continue
            if status == 202:
                self.ids.setdefault(key, set()).update(answer["ids"])
                return
            if status != 503:
                self.errors.append(f"{key}: {status} {answer}")
                return
            time.sleep(1)
        self.errors.append(f"{key}: never answered 202")

    def _run(self) -> None:
        body = b"id,name\n1,a\n2,b\n"
        for _ in range(EVENTS_AT_MOST):
            if self._stop.wait(EVENT_EVERY_SECONDS):
                return
            key = f"upgrade/{uuid.uuid4().hex[:10]}.csv"
            put = self.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body)
            event = s3_event(INPUT_BUCKET, key, len(body))
            # The object's own ETag: the export is pinned to it (the strategy's is made up).
            event["Records"][0]["s3"]["object"]["eTag"] = put["ETag"].strip('"')
            self._deliver(event, key)

    def __enter__(self) -> Events:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=200)

    def all_ids(self) -> list[str]:
        return sorted(i for ids in self.ids.values() for i in ids)


def _exportjobs(cluster: E2ECluster, namespace: str) -> dict[str, Any]:
    items = cluster.kubectl_json("-n", namespace, "get", "exportjobs")["items"]
    return {o["metadata"]["name"]: o for o in items}


def _wait_final(
    cluster: E2ECluster, namespace: str, ids: list[str], within: float = 900
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        objects = _exportjobs(cluster, namespace)
        phases = {i: (objects.get(i, {}).get("status") or {}).get("phase") for i in ids}
        if all(p in FINAL for p in phases.values()):
            return objects
        left = Counter(p for p in phases.values() if p not in FINAL)
        assert time.monotonic() < deadline, f"exports never finished: {left}"
        time.sleep(2)


def _seconds(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _delivered(callbacks: Path) -> Counter[str]:
    """Deliveries answered 2xx per export (the receiver's log)."""
    answered: Counter[str] = Counter()
    for line in callbacks.read_text().splitlines():
        record = json.loads(line)
        if record.get("status", 204) < 300 and record.get("event"):
            answered[str(record["event"]["subject"])] += 1
    return answered


def _check(
    cluster: E2ECluster, product: Any, posted: list[str], events: Events, callbacks: Path
) -> None:
    assert events.errors == [], events.errors
    # Every object's event made one export, however often it was delivered.
    assert {k: len(v) for k, v in events.ids.items()} == dict.fromkeys(events.ids, 1)
    ids = posted + events.all_ids()
    objects = _wait_final(cluster, product.namespace, ids)
    phases = Counter(objects[i]["status"]["phase"] for i in ids)
    assert phases == {"Succeeded": len(ids)}, phases
    # None ran twice: one pod each (the Jobs and their pods are kept for an hour).
    pods = cluster.kubectl_json(
        "-n", product.namespace, "get", "pods", "-l", "exportjobs.dev/export"
    )["items"]
    per_export = Counter(p["metadata"]["labels"]["exportjobs.dev/export"] for p in pods)
    assert {i: per_export[i] for i in ids} == dict.fromkeys(ids, 1)
    # The queue kept its order: no posted export started before one accepted earlier, but for
    # the exports one admission pass lets in together (their Jobs are created at once: the first
    # run saw 52, 53, 53, 52, 53 s for the first five at maxRunning 5). A jump of the queue
    # shows as a start a whole slot's turn (a pod's run, seconds) before an earlier export's.
    starts = [_seconds(objects[i]["status"]["startTime"]) for i in posted]
    jumps = [
        (posted[j], max(starts[:j]) - starts[j])
        for j in range(1, len(starts))
        if max(starts[:j]) - starts[j] > SAME_PASS_SECONDS
    ]
    assert jumps == [], jumps
    # Every callback answered 2xx exactly once.
    deadline = time.monotonic() + 120
    delivered = _delivered(callbacks)
    while any(delivered[i] == 0 for i in posted) and time.monotonic() < deadline:
        time.sleep(2)
        delivered = _delivered(callbacks)
    assert {i: delivered[i] for i in posted} == dict.fromkeys(posted, 1)
    print(
        f"{len(posted)} posted + {len(events.ids)} events ({events.deliveries} deliveries): "
        f"all Succeeded once, callbacks once each"
    )


def _post(product: Any, count: int, callback: str) -> list[str]:
    ids = []
    for _ in range(count):
        status, body = call(
            product,
            "POST",
            "/v1/exports",
            {
                "source": f"s3://{INPUT_BUCKET}/upgrade/source.csv",
                "format": "csv",
                "callback_url": callback,
            },
        )
        assert status == 202, body
        ids.append(body["id"])
    return ids


def test_upgrade_and_rollback_with_exports_in_flight(
    product: Any, e2e_cluster: E2ECluster, e2e_s3: Any, tmp_path: Path
) -> None:
    soak = load("soak", "bench")
    count = int(os.environ.get("EXPORTJOBS_UPGRADE_EXPORTS", "50"))
    old_chart = previous_chart(tmp_path)
    url, secret, callbacks = soak.start_receiver(tmp_path / "callbacks", 0.0)
    ns = product.namespace
    e2e_s3.put_object(
        Bucket=INPUT_BUCKET,
        Key="upgrade/source.csv",
        Body=b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(1000)),
    )
    values = tmp_path / "values.json"
    values.touch(mode=0o600)  # the release's keys and tokens
    try:
        # The release as the previous commit's chart installs it: two operators electing a
        # leader, callbacks to the receiver on the node's address.
        product.upgrade(
            {
                "notifications": {
                    "secrets": [secret],
                    "allowlist": [f"{soak.NODE_ADDRESS}/32"],
                    "allowHttp": True,
                },
                "operator": {"replicas": 2, "maxRunning": MAX_RUNNING},
            }
        )
        chart_values = json.loads((product.state_dir / "values.json").read_text())
        values.write_text(json.dumps(chart_values))
        _helm_wait(e2e_cluster, ns, "upgrade", RELEASE, str(old_chart), "-f", str(values))
        _settled(e2e_cluster, product)
        history = json.loads(_helm(e2e_cluster, "history", RELEASE, "-n", ns, "-o", "json"))
        old_revision = str(history[-1]["revision"])

        # Up to this tree's chart, pod annotations rolling both Deployments.
        rolled = {
            **chart_values,
            "webhook": {**chart_values.get("webhook", {}), "podAnnotations": {"upgrade": "1"}},
            "operator": {**chart_values["operator"], "podAnnotations": {"upgrade": "1"}},
        }
        values.write_text(json.dumps(rolled))
        posted = _post(product, count, url)
        with Events(product, e2e_s3) as events:
            _helm_wait(e2e_cluster, ns, "upgrade", RELEASE, str(REPO / CHART), "-f", str(values))
        _check(e2e_cluster, product, posted, events, callbacks)
        _settled(e2e_cluster, product)

        # And back to the previous chart and values, work in flight again.
        posted = _post(product, count, url)
        with Events(product, e2e_s3) as events:
            _helm_wait(e2e_cluster, ns, "rollback", RELEASE, old_revision)
        _check(e2e_cluster, product, posted, events, callbacks)
    finally:
        soak.stop_receiver(tmp_path / "callbacks")
        product.upgrade({})
        answering(product)
