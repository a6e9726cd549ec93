"""Inputs and names the processor tests against real S3 share."""

from __future__ import annotations

MiB = 1024 * 1024
FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]
EXT = {"csv": ".csv", "csv.gz": ".csv.gz", "jsonl": ".jsonl", "parquet": ".parquet"}


def medium_csv(rows: int = 120_000, *, tail: str = "") -> bytes:
    """About 100 bytes a row: ids, uuids-ish, floats, categories, quoted text with commas."""
    lines = ["id,key,amount,category,text"]
    for i in range(rows):
        lines.append(
            f'{i},k{i * 7919 % 1000003:07d},{i * 0.37:.2f},cat{i % 13},"row {i}, said ""hi"" '
            f'{"x" * (i % 40)}"'
        )
    return ("\r\n".join(lines) + "\r\n" + tail).encode()
