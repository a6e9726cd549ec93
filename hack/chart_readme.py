#!/usr/bin/env python3
"""Write charts/exportjobs/README.md from values.yaml: every value with its default and comment.

    python hack/chart_readme.py          # rewrite the README
    python hack/chart_readme.py --check  # exit 1 when it is out of date (tests/unit/docs)

The description of a key is its `# --` comment (and the `#` lines after it) right above it, as
helm-docs reads them; the default is the key's value in values.yaml.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "exportjobs"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")

HEADER = """# exportjobs Helm chart

A Kubernetes job launcher for data exports: an HTTP webhook takes S3 events or API calls and
stores ExportJobs; an operator runs each as a Job whose processor converts a CSV on S3 and writes
the report back to S3. Needs Kubernetes {kube}.

Install it as README.md says ("Install on a cluster"; a test runs those commands as written).

What it installs, RBAC, security and monitoring: [docs/chart.md](../../docs/chart.md); the
variables each value sets: [docs/configuration.md](../../docs/configuration.md). `helm test`
checks that the webhook answers. This file is generated from `values.yaml` by
`hack/chart_readme.py` (a test fails when it is out of date).

## Values

| key | default | description |
| --- | --- | --- |
"""


def described(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) of every key with a `# --` comment, in file order."""
    found: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            comment = [stripped[5:]]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if not match:
            comment = [] if not stripped.startswith("-") else comment
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        if comment:
            found.append((".".join(key for _, key in path), " ".join(comment)))
        comment = []
    return found


def lookup(values: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        values = values[key]
    return values


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    rows = []
    for key, description in described(text):
        default = json.dumps(lookup(values, key), separators=(",", ":")).replace("|", "\\|")
        cell = description.replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {cell} |")
    return HEADER.format(kube=chart["kubeVersion"]) + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    readme = CHART / "README.md"
    wanted = render()
    if "--check" in argv:
        if not readme.exists() or readme.read_text() != wanted:
            print(f"{readme} is out of date: run python hack/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
