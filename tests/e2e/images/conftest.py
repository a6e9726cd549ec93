"""The images, built once per session for every image test module."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.cluster import REPO


@pytest.fixture(scope="session")
def images() -> None:
    """Build (or reuse, through Docker's layer cache) both images from the current tree."""
    subprocess.run([str(REPO / "hack" / "images.sh"), "build"], check=True)
