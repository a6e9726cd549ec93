"""The dependency lock: its exports are complete and hash-pinned, the venv is exactly the lock,
and the lock check fails when pyproject.toml changes without a new lock."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from hypothesis import given
from hypothesis import strategies as st

from tests.support import hack_modules

REPO = Path(__file__).resolve().parents[3]
LOCK_SH = REPO / "hack" / "lock.sh"
TARGETS = ("operator", "processor", "dev")


lock = hack_modules.load("lock")


def _pins(target: str) -> dict[str, str]:
    return lock.wanted(  # type: ignore[no-any-return]
        lock.parse((REPO / "requirements" / f"{target}.txt").read_text()),
        lock.current_environment(),
    )


def _extra_roots(extra: str) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["optional-dependencies"][extra]:
        name = requirement.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        names.add(lock.canonicalize_name(name))
    return names


@pytest.mark.parametrize("target", TARGETS)
def test_every_export_pins_exact_versions_with_hashes(target: str) -> None:
    pins = lock.parse((REPO / "requirements" / f"{target}.txt").read_text())
    assert pins
    assert all(p.hashes for p in pins)  # parse() also refuses a pin without one
    assert len({p.name for p in pins}) == len(pins)


def test_exports_hold_their_extras_and_nothing_of_the_other_image() -> None:
    operator, processor, dev = (_pins(t) for t in TARGETS)
    assert _extra_roots("operator") <= set(operator)
    assert _extra_roots("processor") <= set(processor)
    assert _extra_roots("dev") | set(operator) | set(processor) <= set(dev)
    # The processor image stays small: no Kubernetes client, no web framework.
    assert not {"kopf", "kubernetes-asyncio", "aiohttp"} & set(processor)
    assert "pyarrow" not in operator
    # One version of each package across the images and the venv.
    for name, version in {**operator, **processor}.items():
        assert dev[name] == version


def test_venv_is_exactly_the_lock() -> None:
    """What hack/venv.sh promises: `pip freeze` of the running venv is requirements/dev.txt."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    ).stdout
    installed = lock.parse_freeze(freeze)
    installed.pop("pip")  # the installer its Python shipped: not part of the lock
    diff = lock.differences(_pins("dev"), installed)
    assert diff == [], (
        "the venv is not the lock: run hack/venv.sh, or `make lock` after editing pyproject.toml "
        "(installing a package by hand does not lock it)\n" + "\n".join(diff)
    )


def _project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "requirements", copy / "requirements")
    return copy


def _check(project: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EXPORTJOBS_LOCK_PROJECT": str(project),
        "EXPORTJOBS_VENV": str(Path(sys.executable).parent.parent),
        # Offline and with an empty cache: the check must not depend on either.
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
    }
    return subprocess.run(
        [str(LOCK_SH), "check"], env=env, capture_output=True, text=True, timeout=120
    )


def test_lock_check_passes_on_the_committed_lock(tmp_path: Path) -> None:
    result = _check(_project_copy(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "match pyproject.toml" in result.stderr


@pytest.mark.parametrize(
    "edit",
    [
        ('    "isal>=1.6",\n', ""),  # a dependency dropped
        ('    "isal>=1.6",\n', '    "isal>=1.6",\n    "six>=1.10",\n'),  # one added
        ('"kopf>=1.38"', '"kopf>=1.38,<1.39"'),  # a bound the locked version breaks
    ],
    ids=["dropped", "added", "narrowed"],
)
def test_lock_check_fails_when_pyproject_changes_without_a_new_lock(
    tmp_path: Path, edit: tuple[str, str]
) -> None:
    project = _project_copy(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert edit[0] in text
    pyproject.write_text(text.replace(edit[0], edit[1]))
    result = _check(project, tmp_path)
    assert result.returncode == 1
    assert "uv.lock does not match pyproject.toml: run `make lock`" in result.stderr


def test_lock_check_fails_on_a_hand_edited_export(tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    export = project / "requirements" / "processor.txt"
    export.write_text(export.read_text() + "# edited\n")
    result = _check(project, tmp_path)
    assert result.returncode == 1
    assert "requirements/processor.txt is not the export of uv.lock" in result.stderr


def test_unknown_lock_command_is_named() -> None:
    result = subprocess.run([str(LOCK_SH), "bogus"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown command 'bogus'" in result.stderr


_names = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,5})?", fullmatch=True)
_versions = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}(\.post[0-9])?", fullmatch=True)
_markers = st.sampled_from(
    [None, "sys_platform == 'win32'", "python_full_version < '3.13'", "os_name == 'nt'"]
)
_hashes = st.lists(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), min_size=1, max_size=3)


@given(
    st.lists(st.tuples(_names, _versions, _markers, _hashes), unique_by=lambda t: t[0], max_size=6)
)
def test_parse_reads_back_what_uv_export_writes(
    entries: list[tuple[str, str, str | None, list[str]]],
) -> None:
    lines = ["# The locked 'x' install."]
    for name, version, marker, hashes in entries:
        head = f"{name}=={version}" + (f" ; {marker}" if marker else "")
        lines.append(" \\\n".join([head, *(f"    --hash=sha256:{h}" for h in hashes)]))
        lines.append("    # via exportjobs")
    pins = lock.parse("\n".join(lines) + "\n")
    assert [(p.name, p.version, p.marker, p.hashes) for p in pins] == [
        (lock.canonicalize_name(n), v, m, frozenset(h)) for n, v, m, h in entries
    ]


def test_parse_refuses_ranges_and_missing_hashes() -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        lock.parse("kopf>=1.38 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="without a hash"):
        lock.parse("kopf==1.38.0\n")


def test_markers_are_resolved_for_the_target_python() -> None:
    text = (
        f"a==1 ; python_full_version < '3.12' --hash=sha256:{'1' * 64}\n"
        f"b==2 ; sys_platform == 'win32' --hash=sha256:{'2' * 64}\n"
        f"c==3 --hash=sha256:{'3' * 64}\n"
    )
    pins = lock.parse(text)
    assert lock.wanted(pins, lock.environment("3.11.2")) == {"a": "1", "c": "3"}
    assert lock.wanted(pins, lock.environment("3.12.8")) == {"c": "3"}


def test_differences_name_each_kind() -> None:
    diff = lock.differences({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert diff == [
        "differs   b: locked 2, installed 9",
        "missing   c==3",
        "unlocked  d==4",
    ]


def test_sbom_lists_the_pins_with_the_installed_wheel_hash(tmp_path: Path) -> None:
    wheel = tmp_path / "a_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    digest = hashlib.sha256(b"wheel bytes").hexdigest()
    pins = lock.parse(
        f"a-pkg==1.0 --hash=sha256:{digest} --hash=sha256:{'f' * 64}\n"
        f"b==2 ; sys_platform == 'win32' --hash=sha256:{'2' * 64}\n"
    )
    env = lock.environment("3.11.2")
    bom = lock.sbom(pins, env, name="exportjobs-x", version="0.1.0", wheels=tmp_path)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5"
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(bom))
    assert errors is None, str(errors)[:2000]  # the official CycloneDX 1.5 JSON schema
    assert bom["components"] == [
        {
            "type": "library",
            "bom-ref": "pkg:pypi/a-pkg@1.0",
            "name": "a-pkg",
            "version": "1.0",
            "purl": "pkg:pypi/a-pkg@1.0",
            "hashes": [{"alg": "SHA-256", "content": digest}],
        }
    ]
    again = lock.sbom(pins, env, name="exportjobs-x", version="0.1.0", wheels=tmp_path)
    assert json.dumps(again) == json.dumps(bom)  # deterministic: Docker's layer cache holds
    wheel.write_bytes(b"another wheel")
    with pytest.raises(ValueError, match="hash the lock does not allow"):
        lock.sbom(pins, env, name="exportjobs-x", version="0.1.0", wheels=tmp_path)


def test_the_schema_validation_is_live() -> None:
    bad = {"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{"name": "x"}]}
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(bad)) is not None


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "lock.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_as_venv_sh_and_images_sh_use_it(tmp_path: Path) -> None:
    reqs = tmp_path / "reqs.txt"
    reqs.write_text(
        f"a==1 ; python_full_version < '3.12' --hash=sha256:{'1' * 64}\n"
        f"b==2 --hash=sha256:{'2' * 64}\n"
    )
    target = _cli("target", str(reqs), "--python", "3.12.1")
    assert target.stdout == f"b==2 --hash=sha256:{'2' * 64}\n"
    freeze = "a==1\nb==2\npip==23.2.1\nstray==0.1\n"
    extraneous = _cli(
        "extraneous", str(reqs), "--python", "3.11.2", "--ignore", "pip", stdin=freeze
    )
    assert extraneous.stdout.split() == ["stray"]
    same = _cli("compare", str(reqs), "--python", "3.11.2", "--ignore", "pip", stdin="a==1\nb==2\n")
    assert same.returncode == 0 and same.stdout == ""
    drift = _cli("compare", str(reqs), "--python", "3.11.2", stdin="b==3\n")
    assert drift.returncode == 1
    assert drift.stdout.splitlines() == ["missing   a==1", "differs   b: locked 2, installed 3"]
