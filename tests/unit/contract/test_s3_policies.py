"""The least-privilege S3 policies (export_operator.s3policy): what docs/security.md shows is
what the code makes for the demo's prefixes, and no document grants more than its component
does."""

from __future__ import annotations

import json
import re

import pytest

from export_operator.s3names import S3UriError
from export_operator.s3policy import component_policies
from tests.support.cluster import REPO

SOURCES = ["s3://exports-input/", "s3://datasets/"]
DESTINATIONS = ["s3://exports-output/exports/"]


def _documented() -> dict[str, object]:
    text = (REPO / "docs" / "security.md").read_text()
    section = text.split("## S3 permissions: least privilege", 1)[1].split("\n## ", 1)[0]
    found = re.findall(
        r"^(Processor|Webhook|Operator):\n\n```json\n(.*?)\n```", section, re.M | re.S
    )
    return {name.lower(): json.loads(body) for name, body in found}


def test_the_documented_policies_are_the_ones_the_stack_gets() -> None:
    assert _documented() == component_policies(SOURCES, DESTINATIONS)


def _grants(document: dict[str, object]) -> set[tuple[str, str]]:
    statements = document["Statement"]
    assert isinstance(statements, list)
    return {(a, r) for s in statements for a in s["Action"] for r in s["Resource"]}


def test_no_component_writes_under_a_source_or_lists_keys() -> None:
    policies = component_policies(SOURCES, DESTINATIONS)
    for name, document in policies.items():
        grants = _grants(document)
        assert not any(a == "s3:ListBucket" for a, _ in grants), name
        writes = {r for a, r in grants if a in {"s3:PutObject", "s3:DeleteObject"}}
        assert writes <= {"arn:aws:s3:::exports-output/exports/*"}, name
    assert {a for a, _ in _grants(policies["webhook"])} == {"s3:GetObject"}
    assert {a for a, _ in _grants(policies["operator"])} == {"s3:GetObject"}


def test_prefixes_are_checked() -> None:
    with pytest.raises(S3UriError):
        component_policies(["s3://bucket/no-trailing-slash"], DESTINATIONS)
