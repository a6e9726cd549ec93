"""The one reader of secrets kept in files (`*_FILE` settings of the webhook and the operator)."""

from __future__ import annotations

from pathlib import Path


def read_secret_values(path: str | Path) -> tuple[str, ...]:
    """The non-empty lines, stripped, of a file, or of every visible file of a directory (a mounted
    Secret: one file per key, the `..data` links hidden), in file-name order.

    Raises:
        OSError: when the path cannot be read.
    """
    root = Path(path)
    files = (
        sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        if root.is_dir()
        else [root]
    )
    return tuple(
        line.strip() for file in files for line in file.read_text().splitlines() if line.strip()
    )
