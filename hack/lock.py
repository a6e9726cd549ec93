"""Read the lock's exports (requirements/*.txt) and hold installed environments against them.

The lock is uv.lock; `make lock` exports one hash-pinned requirements file per install target
(requirements/operator.txt, processor.txt and dev.txt, the last being the whole venv). Everything
here reads those exports, so pip, the images and the tests all see the same pins:

    hack/lock.py target REQS --python 3.11.2       the pins for that Python (markers resolved)
    hack/lock.py compare REQS [--python X.Y.Z] < FREEZE
                                                  exit 1 unless `pip freeze --all` lists the pins
    hack/lock.py extraneous REQS < FREEZE          names installed but not locked
    hack/lock.py sbom REQS --python X.Y.Z --name N --version V --wheels DIR
                                                  a CycloneDX 1.5 SBOM of the pins

Only the standard library and `packaging` are used; run it with the venv's Python (hack/venv.sh
and hack/images.sh do).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PROJECT = "exportjobs"

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;(?P<marker>.*))?$"
)
_HASH = re.compile(r"--hash=sha256:(?P<digest>[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """One locked distribution: name (canonical), exact version, optional marker, allowed hashes."""

    name: str
    version: str
    marker: str | None
    hashes: frozenset[str]

    def applies(self, environment: Mapping[str, str]) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(dict(environment))


def parse(text: str) -> list[Pin]:
    """The pins of a hash-pinned requirements file as `uv export` writes it."""
    pins: list[Pin] = []
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, options = line.partition(" --hash=")
        match = _PIN.match(requirement.strip())
        if match is None:
            raise ValueError(f"not an exact pin: {line[:80]!r}")
        hashes = frozenset(m["digest"] for m in _HASH.finditer("--hash=" + options))
        if not hashes:
            raise ValueError(f"pin without a hash: {match['name']}=={match['version']}")
        marker = (match["marker"] or "").strip()
        pins.append(Pin(canonicalize_name(match["name"]), match["version"], marker or None, hashes))
    return pins


def environment(python: str) -> dict[str, str]:
    """Marker variables of CPython `python` (X.Y.Z) on x86-64 Linux, the images' platform."""
    parts = python.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--python wants X.Y.Z, not {python!r}")
    return {
        "python_version": ".".join(parts[:2]),
        "python_full_version": python,
        "implementation_name": "cpython",
        "implementation_version": python,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def current_environment() -> dict[str, str]:
    v = sys.version_info
    return environment(f"{v.major}.{v.minor}.{v.micro}")


def wanted(pins: Iterable[Pin], env: Mapping[str, str]) -> dict[str, str]:
    """name -> version of the pins that install on `env`."""
    return {p.name: p.version for p in pins if p.applies(env)}


def parse_freeze(text: str) -> dict[str, str]:
    """name -> version from `pip freeze --all --exclude-editable`; a URL install maps to its URL."""
    installed: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e "):
            raise ValueError(f"an editable install (use pip freeze --exclude-editable): {line}")
        if " @ " in line:
            name, _, url = line.partition(" @ ")
            installed[canonicalize_name(name)] = url.strip()
        else:
            name, _, version = line.partition("==")
            installed[canonicalize_name(name)] = version
    return installed


def differences(want: Mapping[str, str], have: Mapping[str, str]) -> list[str]:
    """Human-readable differences between the lock and an environment; empty when they agree."""
    lines = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            lines.append(f"missing   {name}=={want[name]}")
        elif name not in want:
            lines.append(f"unlocked  {name}=={have[name]}")
        elif want[name] != have[name]:
            lines.append(f"differs   {name}: locked {want[name]}, installed {have[name]}")
    return lines


def _wheel_hashes(wheels: Path) -> dict[str, str]:
    """name -> sha256 of the one wheel per distribution in `wheels`."""
    found: dict[str, str] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name = canonicalize_name(wheel.name.split("-", 1)[0])
        found[name] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return found


def sbom(
    pins: Iterable[Pin], env: Mapping[str, str], *, name: str, version: str, wheels: Path | None
) -> dict[str, object]:
    """A CycloneDX 1.5 SBOM of the Python packages an image installs from `pins`.

    Deterministic (the serial number is derived from the content), so an unchanged lock gives a
    byte-identical file and Docker's layer cache holds. With `wheels`, each component carries the
    SHA-256 of the wheel actually installed, which must be one the lock allows.
    """
    digests = _wheel_hashes(wheels) if wheels is not None else {}
    components: list[dict[str, object]] = []
    for pin in sorted((p for p in pins if p.applies(env)), key=lambda p: p.name):
        component: dict[str, object] = {
            "type": "library",
            "bom-ref": f"pkg:pypi/{pin.name}@{pin.version}",
            "name": pin.name,
            "version": pin.version,
            "purl": f"pkg:pypi/{pin.name}@{pin.version}",
        }
        if wheels is not None:
            digest = digests.get(pin.name)
            if digest is None:
                raise ValueError(f"no wheel for {pin.name}=={pin.version} in {wheels}")
            if digest not in pin.hashes:
                raise ValueError(f"the wheel of {pin.name} has a hash the lock does not allow")
            component["hashes"] = [{"alg": "SHA-256", "content": digest}]
        components.append(component)
    body: dict[str, object] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "hack/lock.py",
                        "description": "the exportjobs lock export as an SBOM",
                    }
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": f"pkg:pypi/{PROJECT}@{version}",
                "name": name,
                "version": version,
                "purl": f"pkg:pypi/{PROJECT}@{version}",
                "properties": [{"name": "python", "value": env["python_full_version"]}],
            },
        },
        "components": components,
    }
    content = json.dumps(body, sort_keys=True).encode()
    serial = uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(content).hexdigest())
    return {"serialNumber": f"urn:uuid:{serial}", **body}


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=["target", "compare", "extraneous", "sbom"])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--python", help="target CPython X.Y.Z (default: this interpreter)")
    parser.add_argument("--name", default=PROJECT)
    parser.add_argument("--version", default="0")
    parser.add_argument("--wheels", type=Path)
    parser.add_argument("--ignore", action="append", default=[], help="leave NAME out of the check")
    args = parser.parse_args(argv)
    pins = parse(args.requirements.read_text())
    env = environment(args.python) if args.python else current_environment()
    if args.command == "target":
        for pin in pins:
            if pin.applies(env):
                hashes = " ".join(f"--hash=sha256:{h}" for h in sorted(pin.hashes))
                print(f"{pin.name}=={pin.version} {hashes}")
        return 0
    if args.command == "sbom":
        print(
            json.dumps(
                sbom(pins, env, name=args.name, version=args.version, wheels=args.wheels), indent=2
            )
        )
        return 0
    ignored = {canonicalize_name(n) for n in args.ignore}
    have = {n: v for n, v in parse_freeze(sys.stdin.read()).items() if n not in ignored}
    want = wanted(pins, env)
    if args.command == "extraneous":
        print("\n".join(sorted(n for n in have if n not in want)))
        return 0
    diff = differences(want, have)
    for line in diff:
        print(line)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
