"""Each image holds exactly its locked export, says so in an SBOM, and carries the OCI labels.

Opt-in like test_images.py (EXPORTJOBS_IMAGE_TESTS=1; builds through hack/images.sh); needs no
cluster. `pip freeze` runs inside each image: the images have no pip (it is removed after the
install), so the venv's pip package is mounted read-only and run by the image's own Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pip
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.support import hack_modules
from tests.support.cluster import REPO

lock = hack_modules.load("lock")

TAG = os.environ.get("IMAGE_TAG", "dev")
IMAGES = {"operator": f"exportjobs-operator:{TAG}", "processor": f"exportjobs-processor:{TAG}"}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
HOST_PIP = Path(pip.__file__).parent

pytestmark = pytest.mark.skipif(
    os.environ.get("EXPORTJOBS_IMAGE_TESTS") != "1",
    reason="image smoke tests are opt-in: EXPORTJOBS_IMAGE_TESTS=1 (needs a Docker engine; "
    "hack/images.sh builds the images)",
)


def _python(image: str, *args: str, extra_flags: tuple[str, ...] = ()) -> str:
    """Run the image's Python (no network, read-only root, as in the chart); its stdout."""
    result = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"),
            *(*extra_flags, "--entrypoint", "/opt/venv/bin/python", image, *args),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _image_python_version(image: str) -> str:
    return _python(image, "-c", "import platform; print(platform.python_version())").strip()


def _locked(extra: str, image: str) -> tuple[list[Any], dict[str, str]]:
    """The export's pins and name -> version of those that apply to the image's Python."""
    pins = lock.parse((REPO / "requirements" / f"{extra}.txt").read_text())
    return pins, lock.wanted(pins, lock.environment(_image_python_version(image)))


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_pip_freeze_in_the_image_is_the_lock(images: None, extra: str) -> None:
    image = IMAGES[extra]
    freeze = _python(
        image,
        "-m",
        "pip",
        "freeze",
        "--all",
        extra_flags=(
            *("-v", f"{HOST_PIP}:/opt/host-pip/pip:ro", "-e", "PYTHONPATH=/opt/host-pip"),
            *("-e", "PIP_DISABLE_PIP_VERSION_CHECK=1", "-e", "PIP_NO_CACHE_DIR=1"),
        ),
    )
    installed = lock.parse_freeze(freeze)
    _, want = _locked(extra, image)
    # The lock's pins for this image's Python, the project's own wheel, and nothing else (no pip,
    # no setuptools: they are removed after the install).
    assert lock.differences({**want, "exportjobs": VERSION}, installed) == []


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_the_sbom_lists_the_locked_packages_with_their_wheel_hashes(
    images: None, extra: str
) -> None:
    image = IMAGES[extra]
    text = _python(image, "-c", "print(open('/opt/venv/sbom.cdx.json').read())")
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert errors is None, str(errors)[:2000]  # the official CycloneDX 1.5 JSON schema
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5"
    assert bom["serialNumber"].startswith("urn:uuid:")
    assert bom["metadata"]["component"]["name"] == f"exportjobs-{extra}"
    assert bom["metadata"]["component"]["version"] == VERSION
    pins, want = _locked(extra, image)
    listed = {c["name"]: c["version"] for c in bom["components"]}
    assert listed == want
    allowed = {p.name: p.hashes for p in pins}
    for component in bom["components"]:
        assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
        (digest,) = component["hashes"]
        assert digest["alg"] == "SHA-256"
        assert digest["content"] in allowed[component["name"]], component["name"]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


@pytest.mark.parametrize("extra", sorted(IMAGES))
def test_oci_labels_name_version_revision_and_source(images: None, extra: str) -> None:
    labels = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", IMAGES[extra]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert labels["org.opencontainers.image.title"] == f"exportjobs-{extra}"
    assert labels["org.opencontainers.image.version"] == VERSION
    head = _git("rev-parse", "HEAD").stdout.strip()
    dirty = _git("diff", "--quiet", "HEAD", "--").returncode != 0
    assert labels["org.opencontainers.image.revision"] == head + ("-dirty" if dirty else "")
    source = labels["org.opencontainers.image.source"]
    if "IMAGE_SOURCE" in os.environ:
        assert source == os.environ["IMAGE_SOURCE"]
    else:
        origin = _git("remote", "get-url", "origin").stdout.strip() or str(REPO)
        assert source == (f"file://{origin}" if origin.startswith("/") else origin)


@pytest.mark.parametrize(
    ("extra", "command"),
    [
        ("operator", ["exportjobs-operator"]),
        ("operator", ["exportjobs-webhook"]),
        ("processor", []),  # the entrypoint is exportjobs-processor
    ],
    ids=["operator", "webhook", "processor"],
)
def test_version_names_the_product_and_its_locked_libraries(
    images: None, extra: str, command: list[str]
) -> None:
    image = IMAGES[extra]
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, *command, "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    program = command[0] if command else "exportjobs-processor"
    line = result.stdout.strip()
    assert line.startswith(f"{program} {VERSION} (CPython {_image_python_version(image)}): ")
    _, want = _locked(extra, image)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["optional-dependencies"][extra]:
        name = lock.canonicalize_name(requirement.split(">")[0].split("=")[0].split("[")[0])
        assert f"{name} {want[name]}" in line


def test_the_operator_logs_its_versions_at_start(images: None) -> None:
    name = f"exportjobs-version-{uuid.uuid4().hex[:8]}"
    # No cluster: the operator logs its versions before it connects, then keeps retrying.
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network", "none", IMAGES["operator"]),
            *("exportjobs-operator", "--standalone", "--metrics-port", "0", "--liveness-port", "0"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 60
        logs = ""
        while time.monotonic() < deadline:
            logs = subprocess.run(
                ["docker", "logs", name], capture_output=True, text=True, check=False
            ).stderr
            if "exportjobs-operator " in logs:
                break
            time.sleep(0.5)
        assert f"exportjobs-operator {VERSION} (CPython" in logs, logs[-2000:]
        assert "kopf " in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
