"""hack/debian.sh holds installed Debian packages against the known-good list, and says why not."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import REPO

SCRIPT = REPO / "hack" / "debian.sh"
LIST = REPO / "hack" / "debian-packages.txt"

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")


def _entries() -> list[list[str]]:
    lines = LIST.read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


def _installed_version(package: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _run(known: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    listing = tmp_path / "debian-packages.txt"
    if not listing.exists():
        listing.write_text(known)
    env = {**os.environ, "EXPORTJOBS_DEBIAN_LIST": str(listing)}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True)


def test_the_list_names_what_the_scripts_install() -> None:
    entries = _entries()
    assert all(len(entry) == 3 for entry in entries), entries
    assert {scope for scope, _, _ in entries} == {"host", "image-base"}
    keys = [(scope, package) for scope, package, _ in entries]
    assert len(keys) == len(set(keys))
    assert {("host", "docker.io"), ("host", "debootstrap")} <= set(keys)
    images_sh = (REPO / "hack" / "images.sh").read_text()
    match = re.search(r"^base_packages=\(([^)]*)\)", images_sh, re.M)
    assert match is not None
    assert {("image-base", p) for p in match[1].split()} <= set(keys)


@needs_dpkg
def test_known_good_version_passes_and_is_printed(tmp_path: Path) -> None:
    version = _installed_version("dpkg")
    result = _run(f"host dpkg {version}\n", "check", "host", "dpkg", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"host dpkg {version} (known-good)" in result.stderr


@needs_dpkg
def test_another_version_fails_naming_both(tmp_path: Path) -> None:
    version = _installed_version("dpkg")
    result = _run("host dpkg 0.0.1-old\n", "check", "host", "dpkg", tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"host dpkg {version} is not the known-good 0.0.1-old" in result.stderr
    assert "hack/debian.sh record host" in result.stderr


@needs_dpkg
def test_unlisted_and_missing_packages_fail(tmp_path: Path) -> None:
    result = _run("", "check", "host", "dpkg", "no-such-package-xyz", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "host dpkg " in result.stderr and "no known-good version" in result.stderr
    assert "host no-such-package-xyz: not installed" in result.stderr


@needs_dpkg
def test_the_scope_matters(tmp_path: Path) -> None:
    version = _installed_version("dpkg")
    result = _run(f"image-base dpkg {version}\n", "check", "host", "dpkg", tmp_path=tmp_path)
    assert result.returncode == 1


@needs_dpkg
def test_record_writes_the_installed_version(tmp_path: Path) -> None:
    version = _installed_version("dpkg")
    known = "# comment kept\nhost dpkg 0.0.1-old\nimage-base python3 1\n"
    result = _run(known, "record", "host", "dpkg", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "debian-packages.txt").read_text().splitlines()
    assert lines[0] == "# comment kept"
    assert lines[1].split() == ["host", "dpkg", version]
    assert lines[2] == "image-base python3 1"
    assert _run("", "check", "host", "dpkg", tmp_path=tmp_path).returncode == 0


def test_unknown_command_is_named(tmp_path: Path) -> None:
    result = _run("", "bogus", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "unknown command 'bogus'" in result.stderr
