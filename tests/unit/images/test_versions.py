"""`--version` of the three commands: the product's version and its key libraries' (the locked
ones), and the operator logs the same line at start."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from export_operator import operator_main
from export_processor.common import key_libraries, version_line
from tests.support import hack_modules
from tests.support.cluster import REPO

lock = hack_modules.load("lock")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCKED = lock.wanted(
    lock.parse((REPO / "requirements" / "dev.txt").read_text()), lock.current_environment()
)


def _roots(extra: str) -> list[str]:
    names = []
    for requirement in PROJECT["optional-dependencies"][extra]:
        name = requirement.split(">")[0].split("=")[0].split("[")[0].split(";")[0]
        names.append(name.strip())
    return names


@pytest.mark.parametrize("extra", ["operator", "processor"])
def test_key_libraries_are_the_extras_direct_dependencies(extra: str) -> None:
    assert key_libraries(extra) == _roots(extra)


def test_no_libraries_for_an_unknown_extra() -> None:
    assert key_libraries("no-such-extra") == []


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("exportjobs-operator", "operator"),
        ("exportjobs-webhook", "operator"),
        ("exportjobs-processor", "processor"),
    ],
)
def test_version_prints_one_line_with_the_locked_versions(command: str, extra: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # not wrapped, whatever the terminal
    python = ".".join(map(str, sys.version_info[:3]))
    assert result.stdout.startswith(f"{command} {PROJECT['version']} (CPython {python}): ")
    for name in _roots(extra):
        assert f"{name} {LOCKED[lock.canonicalize_name(name)]}" in result.stdout


def test_the_operator_logs_its_versions_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class StartedError(Exception):
        pass

    def serve(**_: object) -> None:
        raise StartedError  # stop before the operator connects to anything

    monkeypatch.setattr(operator_main.metrics, "serve", serve)
    caplog.set_level(logging.INFO, logger="export_operator.operator_main")
    root = logging.getLogger()
    # main() configures the process's logging (JSON to stderr): put the test process's back.
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(StartedError):
        operator_main.main(["--standalone"])
    assert version_line("exportjobs-operator", "operator") in caplog.messages


@pytest.mark.parametrize(("level", "shown"), [("INFO", True), ("WARNING", False)])
def test_the_operator_logs_json_lines_at_its_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], level: str, shown: bool
) -> None:
    """The webhook's JSON line format, and EXPORTJOBS_OPERATOR_LOG_LEVEL (operator.logLevel)."""

    class StartedError(Exception):
        pass

    def serve(**_: object) -> None:
        raise StartedError

    monkeypatch.setattr(operator_main.metrics, "serve", serve)
    monkeypatch.setenv("EXPORTJOBS_OPERATOR_LOG_LEVEL", level)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(StartedError):
        operator_main.main(["--standalone"])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    versions = [x for x in lines if x["message"] == version_line("exportjobs-operator", "operator")]
    assert bool(versions) is shown
    if shown:
        assert versions[0]["level"] == "INFO"
        assert versions[0]["logger"] == "export_operator.operator_main"
        assert "time" in versions[0]
