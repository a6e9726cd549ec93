"""Running helm and kubectl on the chart, and reading what it renders."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "exportjobs"


def run(
    args: list[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output (not just its exit code) when asked to check."""
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, env=dict(os.environ))
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def set_flags(values: Mapping[str, str]) -> list[str]:
    """`--set k=v` for each value (helm types them: numbers, booleans, strings)."""
    flags: list[str] = []
    for key, value in values.items():
        flags += ["--set", f"{key}={value}"]
    return flags


def template(
    *,
    namespace: str = "exports",
    release: str = "ej",
    values: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart (no cluster needed)."""
    return run(
        [
            tool("helm"),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *set_flags(values or {}),
        ],
        check=check,
    )


def objects(manifest: str) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest."""
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def pod_specs(docs: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


EVERYTHING_ON = {
    "webhook.ingress.enabled": "true",
    "serviceMonitor.enabled": "true",
    "s3.accessKeyId": "minio",
    "s3.secretAccessKey": "minio-secret",
    "s3.endpointUrl": "http://minio.storage:9000",
    "s3.region": "eu-west-1",
    "s3.defaultDestination": "s3://exports-output/reports/",
    "auth.tokens[0]": "a-token-of-sixteen-chars",
}
