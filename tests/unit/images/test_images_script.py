"""hack/images.sh refuses what it does not know, before touching Docker."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "images.sh"


def test_unknown_command_is_named_with_the_known_ones() -> None:
    result = subprocess.run([str(SCRIPT), "bogus"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown command 'bogus'" in result.stderr
    assert "engine-stop" in result.stderr
