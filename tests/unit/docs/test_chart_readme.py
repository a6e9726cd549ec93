"""charts/exportjobs/README.md is generated from values.yaml and kept current."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.support.docs_blocks import REPO
from tests.support.hack_modules import load

readme = load("chart_readme")


def test_the_chart_readme_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "chart_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_leaf_value_is_in_the_readme() -> None:
    values = yaml.safe_load((readme.CHART / "values.yaml").read_text())
    keys = {key for key, _ in readme.described((readme.CHART / "values.yaml").read_text())}

    def leaves(node: object, prefix: str) -> set[str]:
        if isinstance(node, dict) and node and prefix not in keys:
            return set().union(*(leaves(v, f"{prefix}.{k}".lstrip(".")) for k, v in node.items()))
        return {prefix}

    assert leaves(values, "") - keys == set()


def test_a_changed_comment_makes_it_stale() -> None:
    text = "a:\n  # -- the b value\n  b: 1\n  # -- c, on\n  # two lines\n  c: [x]\n"
    assert readme.described(text) == [("a.b", "the b value"), ("a.c", "c, on two lines")]
