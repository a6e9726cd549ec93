"""What `--version` prints: the product's version and the installed versions of the libraries
that an image's extra brings in, read from the installed distribution's metadata.

Standard library only and nothing of the data path, so the operator's commands use it too (the
processor imports nothing of the operator; the other way round is allowed).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

DISTRIBUTION = "exportjobs"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def key_libraries(extra: str) -> list[str]:
    """The direct dependencies of `extra` as pyproject.toml lists them, in that order."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    names: list[str] = []
    for requirement in requires:
        requirement_extra = _EXTRA.search(requirement)
        name = _NAME.match(requirement)
        if requirement_extra and requirement_extra[1] == extra and name and name[0] not in names:
            names.append(name[0])
    return names


def version_line(program: str, extra: str) -> str:
    """`exportjobs-operator 0.1.0 (CPython 3.11.2): kopf 1.45.2, aiohttp 3.14.5, …`."""
    libraries = ", ".join(f"{name} {_installed(name)}" for name in key_libraries(extra))
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{program} {_installed(DISTRIBUTION)} ({python}): {libraries}"


class _PrintVersion(argparse.Action):
    """`--version`: print `version_line` unwrapped (argparse's own action re-wraps it) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, line: tuple[str, str]) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help=("print the version and those of the key libraries, then exit"),
        )
        self.line = line

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(version_line(*self.line), file=sys.stdout)
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser, *, program: str, extra: str) -> None:
    """Give a command `--version`, printing `version_line(program, extra)`."""
    parser.add_argument(
        "--version", action=_PrintVersion, dest=argparse.SUPPRESS, line=(program, extra)
    )
