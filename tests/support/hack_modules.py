"""Import a script of hack/ or bench/ (not packages) as a module, for the tests that use it."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.cluster import REPO


def load(name: str, folder: str = "hack") -> ModuleType:
    """<folder>/<name>.py as the module `<folder>_<name>` (loaded once)."""
    module_name = f"{folder}_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
