"""The tools hack/tools.sh builds (kubectl, helm, ...), found where it puts them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.cluster import REPO


def tool(name: str) -> str:
    """The path of a tool hack/tools.sh built (helm, kubectl)."""
    dirs = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "path"], check=True, capture_output=True, text=True
    ).stdout.split()
    for folder in dirs:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not built: run hack/tools.sh all")
