"""The chart's alert rules and dashboard: Prometheus parses every expression, and every metric
they read is in the /metrics of the running webhook and operator.

The expressions are parsed by Prometheus's own PromQL parser (`promql-check`, built by
hack/tools.sh from hack/promql), which also names the metrics each one selects.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from typing import Any

from tests.support.helm import by_kind, objects, template, tool
from tests.support.net import free_port
from tests.support.operator_process import OperatorProcess
from tests.support.webhook_process import StartWebhook, start_webhook  # noqa: F401

MONITORING = {
    "monitoring.prometheusRule.enabled": "true",
    "monitoring.grafanaDashboard.enabled": "true",
}
_TYPE = re.compile(r"^# TYPE (\S+) (\w+)$", re.MULTILINE)


def _expressions() -> dict[str, str]:
    """Alert name or panel title -> its PromQL."""
    docs = objects(template(values=MONITORING).stdout)
    (rule,) = by_kind(docs, "PrometheusRule")
    found = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert len(found) == 6
    (dashboard,) = by_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["exportjobs.json"])["panels"]
    for panel in panels:
        found[panel["title"]] = panel["targets"][0]["expr"]
    return found


def _parse(expressions: list[str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("promql-check")],
        input="".join(json.dumps(e) + "\n" for e in expressions),
        capture_output=True,
        text=True,
        check=False,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(expressions), result.stderr
    return answers


def _exposed(text: str) -> set[str]:
    """Every sample name a /metrics text can carry (counters' _total, histograms' series)."""
    names = set()
    for name, kind in _TYPE.findall(text):
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_the_parser_refuses_a_broken_expression() -> None:
    good, bad = _parse(["rate(x_total[5m]) > 0", "rate(x_total[5m] > 0"])
    assert good == {"metrics": ["x_total"]}
    assert "error" in bad


async def test_rules_and_dashboard_parse_and_read_only_exposed_metrics(
    start_webhook: StartWebhook,  # noqa: F811
    operator: OperatorProcess,
) -> None:
    expressions = _expressions()
    answers = dict(zip(expressions, _parse(list(expressions.values())), strict=True))
    errors = {name: a["error"] for name, a in answers.items() if "error" in a}
    assert errors == {}

    webhook = await start_webhook()
    _, webhook_metrics, _ = await webhook.request("GET", "/metrics")
    port = free_port()
    operator.start(metrics_host="127.0.0.1", metrics_port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            async with webhook.session.get(f"http://127.0.0.1:{port}/metrics") as response:
                operator_metrics = await response.text()
            break
        except OSError:
            assert time.monotonic() < deadline, "the operator's /metrics did not answer"
            await asyncio.sleep(0.2)
    # The operator logs JSON lines, as the webhook does.
    for line in operator.logs().splitlines():
        assert isinstance(json.loads(line), dict), line
    exposed = _exposed(str(webhook_metrics)) | _exposed(operator_metrics)
    missing = {
        name: [m for m in a["metrics"] if m not in exposed]
        for name, a in answers.items()
        if any(m not in exposed for m in a["metrics"])
    }
    assert missing == {}


def test_monitoring_is_off_by_default() -> None:
    kinds = {d["kind"] for d in objects(template().stdout)}
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds
