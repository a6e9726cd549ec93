"""The test tree's shape (issue 21 item 7): what several test modules share lives in
tests/support/; no test module imports another test module, a conftest, or another tier's files."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tests_import_only_tests_support() -> None:
    wrong: list[str] = []
    for path in sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.split(".")[0] == "tests" and not name.startswith("tests.support"):
                    wrong.append(f"{path.relative_to(REPO)}: {name}")
    assert wrong == [], "move what is shared to tests/support/"
