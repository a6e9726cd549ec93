"""Render the CRD's `spec` schema from the models (export_operator.models) into the chart's file.

    .venv/bin/python hack/crd_spec.py          # rewrite the CRD file in charts/exportjobs/crds/
    .venv/bin/python hack/crd_spec.py --check  # exit 1 when the file differs from the models

Only `spec` is rendered; `status`, printer columns and the rest of the file are kept as written.
tests/unit/contract/test_crd_drift.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from export_operator.contract_schemas import crd_spec_schema

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "charts" / "exportjobs" / "crds" / "exportjobs.dev_exportjobs.yaml"


def header(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def spec_of(document: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]  # type: ignore[no-any-return]


def rendered(text: str) -> str:
    document = yaml.safe_load(text)
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"] = crd_spec_schema()
    body = yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)
    return header(text) + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only")
    args = parser.parse_args()
    text = CRD_FILE.read_text()
    if args.check:
        if spec_of(yaml.safe_load(text)) != crd_spec_schema():
            print(f"{CRD_FILE} differs from the models: run hack/crd_spec.py", file=sys.stderr)
            return 1
        return 0
    CRD_FILE.write_text(rendered(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
