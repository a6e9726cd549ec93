"""The shape issue 21 asked of the production code, held: no module over 400 lines, no class
over 12 attributes (a newcomer reads a module in one sitting and holds a class in their head).

Attributes of a class: the fields its body declares (annotated names, not ClassVars or
`model_config`) and the `self.<name>` it assigns in its methods, with those of its bases defined
in the production code. Properties are derived, not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = [REPO / "operator" / "export_operator", REPO / "processor" / "export_processor"]
MAX_MODULE_LINES = 400
MAX_ATTRIBUTES = 12

STILL_LONG: dict[str, int] = {}
"""Modules still over the limit (lines), as STILL_OVER: they may only shrink, and leave the list
once within it."""

STILL_OVER: dict[str, tuple[int, str]] = {}
"""Classes still over the limit, with their count and why: a count may only go down, and a
class leaves this list once it is within the limit (the test says so)."""


def _modules() -> list[Path]:
    return sorted(p for root in PRODUCTION for p in root.rglob("*.py"))


def _own(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for node in cls.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and "ClassVar" not in ast.unparse(node.annotation)
            and node.target.id != "model_config"
        ):
            names.add(node.target.id)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                targets: list[ast.expr] = []
                if isinstance(inner, ast.Assign):
                    targets = inner.targets
                elif isinstance(inner, ast.AnnAssign | ast.AugAssign):
                    targets = [inner.target]
                for target in targets:
                    for part in ast.walk(target):
                        if (
                            isinstance(part, ast.Attribute)
                            and isinstance(part.value, ast.Name)
                            and part.value.id == "self"
                        ):
                            names.add(part.attr)
    return names


def attribute_counts() -> dict[str, int]:
    """'<package-relative path>:<class>' → attributes, bases in the production code included."""
    classes: dict[str, tuple[str, ast.ClassDef]] = {}
    for path in _modules():
        where = str(path.relative_to(REPO)).split("/", 1)[1].removeprefix("export_operator/")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, (f"{where}:{node.name}", node))

    def attributes(cls: ast.ClassDef, seen: frozenset[str]) -> set[str]:
        names = _own(cls)
        for base in cls.bases:
            name = ast.unparse(base).split("[")[0].rsplit(".", 1)[-1]
            if name in classes and name not in seen:
                names |= attributes(classes[name][1], seen | {name})
        return names

    return {label: len(attributes(cls, frozenset({cls.name}))) for label, cls in classes.values()}


def test_no_production_module_is_over_400_lines() -> None:
    lines = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in _modules()}
    long = {name: n for name, n in lines.items() if n > STILL_LONG.get(name, MAX_MODULE_LINES)}
    assert long == {}, "split by responsibility (docs/architecture.md)"
    shorter = {
        n: lines[n] for n in STILL_LONG if MAX_MODULE_LINES < lines.get(n, 0) < STILL_LONG[n]
    }
    assert shorter == {}, "shorter now: write its new length in STILL_LONG (it cannot grow back)"
    fixed = sorted(name for name in STILL_LONG if lines.get(name, 0) <= MAX_MODULE_LINES)
    assert fixed == [], "within the limit now: remove it from STILL_LONG"


def test_the_reconcile_path_of_docs_architecture_is_at_most_1200_lines() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    command = next(line for line in doc.splitlines() if "wc -l manager.py" in line)
    names = command.split("wc -l", 1)[1].split()
    assert len(names) <= 5
    controller = REPO / "operator" / "export_operator" / "controller"
    total = sum(len((controller / name).read_text().splitlines()) for name in names)
    assert total <= 1200, f"{total} lines: docs/architecture.md, 'The reconcile path'"


def test_no_class_has_more_than_12_attributes() -> None:
    counts = attribute_counts()
    over = {label: n for label, n in counts.items() if n > MAX_ATTRIBUTES}
    new = {label: n for label, n in over.items() if label not in STILL_OVER}
    assert new == {}, "group the attributes by concern into objects of their own"
    grown = {
        label: n for label, n in over.items() if label in STILL_OVER and n > STILL_OVER[label][0]
    }
    assert grown == {}, "a class still over the limit may only shrink"
    shrunk = {
        label: n for label, n in over.items() if label in STILL_OVER and n < STILL_OVER[label][0]
    }
    assert shrunk == {}, "smaller now: write its new count in STILL_OVER (it cannot grow back)"
    fixed = sorted(label for label in STILL_OVER if counts.get(label, 0) <= MAX_ATTRIBUTES)
    assert fixed == [], "within the limit now: remove it from STILL_OVER"


def test_the_count_sees_fields_assignments_and_bases() -> None:
    source = (
        "class A:\n    x: int\n    y: ClassVar[int]\n    def f(self):\n        self.z = self.w = 1"
    )
    tree = ast.parse(source)
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    assert _own(cls) == {"x", "z", "w"}
    assert attribute_counts()["controller/reconciler.py:Reconciler"] >= 10
