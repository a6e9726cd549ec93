"""Issue 24: the operator's metrics name the owner, with bounded cardinality: the owners of
EXPORTJOBS_OPERATOR_OWNER_SHARES (the chart fills it from the principals) by name, `_none`
for exports without one, `_other` for any other `spec.owner` (kubectl users can write anything
there)."""

from __future__ import annotations

import asyncio
import datetime as dt

from prometheus_client import REGISTRY

from export_operator.controller import metrics
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.manager import Manager
from export_operator.controller.settings import OperatorSettings
from tests.support.factories import export_body
from tests.support.fake_kube import FakeKube

NOW = dt.datetime(2026, 1, 1, 0, 20, tzinfo=dt.UTC)
EXPORTS = "/apis/exportjobs.dev/v1alpha1/namespaces/ns/exportjobs"
OWNERS = {"team-a": 3, "team-b": 2, "": 1, "not-configured": 1, "another-stranger": 1}
LABELS = {"team-a": 3, "team-b": 2, "_none": 1, "_other": 2}


def _by_owner(name: str) -> dict[str, float]:
    return {
        sample.labels["owner"]: sample.value
        for family in REGISTRY.collect()
        if family.name == name
        for sample in family.samples
    }


def _transitions() -> dict[str, float]:
    """Phase transitions written so far, by owner label (all phases)."""
    counts: dict[str, float] = {}
    for family in REGISTRY.collect():
        if family.name == "exportjobs_operator_owner_phase_transitions":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    owner = sample.labels["owner"]
                    counts[owner] = counts.get(owner, 0.0) + sample.value
    return counts


async def test_queue_and_running_figures_and_transitions_are_per_owner() -> None:
    settings = OperatorSettings.from_env(
        {},
        default_destination_uri="s3://out/reports/",
        max_running=3,
        retention_seconds=0,
        owner_shares='{"team-a": {"weight": 2}, "team-b": {}}',
    )
    manager = Manager(settings=settings, clock=lambda: NOW, creations_quiet=0.0)
    kube = FakeKube()
    manager.connect(KubeWriter(kube))
    leading = asyncio.Event()
    leading.set()
    metrics.follow_leadership(leading)
    keys = []
    for owner, count in OWNERS.items():
        for i in range(count):
            name = f"{owner or 'none'}-{i}"
            spec = {"source": {"uri": "s3://b/k.csv"}, "format": "csv"}
            if owner:
                spec["owner"] = owner
            body = export_body(name, created=f"2026-01-01T00:00:0{i}Z", spec=spec)
            kube.objects[f"{EXPORTS}/{name}"] = body
            manager.caches.exports.handle_event({"type": "ADDED", "object": body})
            keys.append(("ns", name))
    before = _transitions()
    manager.admission.admit_once()
    queued = _by_owner("exportjobs_operator_owner_queue_depth")
    running = _by_owner("exportjobs_operator_owner_running_jobs")
    assert set(queued) | set(running) <= set(LABELS)
    assert sum(running.values()) == 3 and sum(queued.values()) == 5
    for label, total in LABELS.items():
        assert queued.get(label, 0) + running.get(label, 0) == total, label
    for key in keys:
        await manager.reconciler.reconcile(key)
    after = _transitions()
    written = {owner for owner, count in after.items() if count > before.get(owner, 0.0)}
    assert written == set(LABELS), "a phase written for every owner's exports, under its label"
    leading.clear()  # a standby exports no per-owner queue
    assert _by_owner("exportjobs_operator_owner_queue_depth") == {}
    leading.set()
