"""The command blocks of the docs, as a user pastes them: found by heading, split into commands.

Every ```sh block of README.md, docs/chart.md, docs/api.md and docs/cli.md is either run by
tests/e2e/test_docs_as_written.py (it names the block by the heading above it) or says in the line
before it why it is not run (`*Not run by the tests: why.*`); tests/unit/docs checks that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/chart.md", "docs/api.md", "docs/cli.md")
ILLUSTRATIVE = re.compile(r"^\*Not run by the tests: (?P<why>.{10,})\*$")
_FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: str
    heading: str
    """The nearest `#` heading above the block."""
    lead: str
    """The last non-blank line before the block (an illustrative marker lives there)."""
    text: str

    @property
    def illustrative(self) -> str:
        found = ILLUSTRATIVE.search(self.lead)
        return found["why"] if found else ""

    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, comment-only lines dropped."""
        found: list[str] = []
        current = ""
        for line in self.text.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            found.append(current + line)
            current = ""
        if current:
            found.append(current)
        return found


def shell_blocks(doc: str) -> list[Block]:
    blocks: list[Block] = []
    heading, lead = "", ""
    lines = (REPO / doc).read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            end = index + 1
            while not lines[end].startswith("```"):
                end += 1
            if fence["lang"] in ("sh", "bash", "shell"):
                blocks.append(Block(doc, heading, lead, "\n".join(lines[index + 1 : end])))
            index = end + 1
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip():
            lead = line
        index += 1
    return blocks


def block(doc: str, heading: str, containing: str) -> Block:
    """The one sh block of `doc` under `heading` whose text contains `containing`."""
    (found,) = [b for b in shell_blocks(doc) if b.heading == heading and containing in b.text]
    return found
