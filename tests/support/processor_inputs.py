"""Inputs, names and the command run that the processor tests against real S3 share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.corpus import EXTENSIONS

MiB = 1024 * 1024
FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]
EXT = EXTENSIONS


def medium_csv(rows: int = 120_000, *, tail: str = "") -> bytes:
    """About 100 bytes a row: ids, uuids-ish, floats, categories, quoted text with commas."""
    lines = ["id,key,amount,category,text"]
    for i in range(rows):
        lines.append(
            f'{i},k{i * 7919 % 1000003:07d},{i * 0.37:.2f},cat{i % 13},"row {i}, said ""hi"" '
            f'{"x" * (i % 40)}"'
        )
    return ("\r\n".join(lines) + "\r\n" + tail).encode()


def run_cli(
    *args: str, env: dict[str, str] | None = None, tmp_path: Path, timeout: float = 120
) -> tuple[int, str, str, dict[str, Any]]:
    message = tmp_path / f"termination-{time.monotonic_ns()}"
    full_env = {**os.environ, "EXPORTJOBS_S3_PART_SIZE_BYTES": str(5 * MiB), **(env or {})}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "export_processor.cli",
            *args,
            "--termination-message-path",
            str(message),
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    payload = json.loads(message.read_text()) if message.exists() else {}
    return done.returncode, done.stdout, done.stderr, payload
