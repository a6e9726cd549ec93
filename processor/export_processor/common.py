"""What the processor and the operator images both need, written once: the contract's error and
exit codes, the CSV option checks, the boolean grammar of settings, the retry backoff, and the
`--version` line.

Standard library only and nothing of the data path (an import-linter contract holds it), so the
operator's commands import it too: the processor imports nothing of the operator; the other way
round is allowed.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import enum
import platform
import random
import re
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, NoReturn


class ErrorCode(enum.StrEnum):
    """`status.error.code`: what went wrong, in the termination message and on the ExportJob.

    The processor writes the first eight; the operator adds those only it can see (deadline,
    OOM kill, scheduling, image pull, pod start, spec, a termination message that breaks the
    processor's contract)."""

    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    SOURCE_CHANGED = "SOURCE_CHANGED"
    DESTINATION_NOT_FOUND = "DESTINATION_NOT_FOUND"
    S3_REFUSED = "S3_REFUSED"
    BAD_CSV = "BAD_CSV"
    INVALID_CONFIG = "INVALID_CONFIG"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    OOM_KILLED = "OOM_KILLED"
    UNSCHEDULABLE = "UNSCHEDULABLE"
    IMAGE_PULL = "IMAGE_PULL"
    POD_START_FAILED = "POD_START_FAILED"
    INVALID_SPEC = "INVALID_SPEC"
    PROCESSOR_PROTOCOL = "PROCESSOR_PROTOCOL"


class ExitCode(enum.IntEnum):
    """The processor's exit codes; the Job's podFailurePolicy keys on them (2 and 3 fail the
    export at once, anything else is retried)."""

    OK = 0
    RETRYABLE = 1
    BAD_INPUT = 2
    SOURCE_MISSING = 3


CSV_CHAR_PATTERN = r"^[\t -~]$"
"""A CSV delimiter or quote: one printable ASCII character or a tab (the CSV parser works on
single bytes; a newline, NUL or a multi-byte character cannot delimit). The CRD's pattern too."""


def is_csv_char(value: str) -> bool:
    """Whether `value` is a CSV delimiter or quote the parser can split on (CSV_CHAR_PATTERN)."""
    return re.fullmatch(CSV_CHAR_PATTERN, value) is not None


def is_supported_encoding(name: str) -> bool:
    """Whether `name` is a text codec that reads ASCII as ASCII (utf-8, latin-1, cp1252, ...).

    The CSV's structure (delimiters, quotes, newlines) is ASCII, so an encoding that decodes ASCII
    bytes to something else (utf-16, utf-7) or is no text codec at all (rot13) cannot be read.
    """
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return False
    if not getattr(info, "_is_text_encoding", True):
        return False
    ascii_bytes = bytes([9, 10, 13, *range(0x20, 0x7F)])
    try:
        return ascii_bytes.decode(info.name) == ascii_bytes.decode("ascii")
    except (UnicodeError, LookupError):
        return False


TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_bool(text: str) -> bool:
    """The one boolean grammar of every setting (docs/configuration.md): `true`, `1`, `yes`, `on`
    and `false`, `0`, `no`, `off`, in any case, surrounding spaces ignored.

    Raises:
        ValueError: for anything else (a typo is an error, never silently false).
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"not a boolean (true/false, 1/0, yes/no, on/off): {text!r}")


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


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter, the one retry delay of the code base (work queue,
    informers, notifier, webhook store, the processor's S3 calls): `base · 2^(failures-1)`, at most
    `cap`, plus up to `jitter` times that at random (so keys that failed together do not retry
    together)."""

    base: float = 0.5
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int, *, rand: Callable[[], float] = random.random) -> float:
        exponent = min(max(failures - 1, 0), 62)
        plain = min(self.cap, self.base * 2.0**exponent)
        return plain * (1.0 + self.jitter * rand())
