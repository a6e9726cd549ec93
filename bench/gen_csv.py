"""Generate a realistic mixed-column CSV for the processor benchmark (cached by size).

Columns: integer id, uuid, ISO timestamp, float amount, category, country, integer quantity,
an email and a quoted free-text description with commas, quotes and the odd newline.

    .venv/bin/python bench/gen_csv.py --mb 800 --out bench/data/mixed-800mb.csv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

CATEGORIES = ["books", "games", "garden", "grocery", "health", "home", "music", "sports", "toys"]
COUNTRIES = ["DE", "FR", "GB", "US", "JP", "BR", "IN", "NL", "SE", "ES", "IT", "CA"]
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "café",
    "naïve",
    "smörgåsbord",
    "straße",
    "東京",
    "ü",
]


def _text(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 14))
    roll = rng.random()
    if roll < 0.25:
        words.insert(rng.randint(0, len(words)), 'said, ""quoted""')
    elif roll < 0.30:
        words.insert(rng.randint(0, len(words)), "two\nlines")
    return ", ".join(words) if rng.random() < 0.5 else " ".join(words)


def generate(path: Path, *, megabytes: int, seed: int = 7) -> Path:
    """Write about `megabytes` MB of CSV to `path` (skipped when it already has that size)."""
    target = megabytes * 1_000_000
    # Generation overshoots by up to one chunk of rows (~2.4 MB at 3 GB): 0.5% is "this size".
    if path.exists() and abs(path.stat().st_size - target) < max(2_000_000, target // 200):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows_per_chunk = 20_000
    base = 1_700_000_000
    written = 0
    row_id = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        header = "id,uuid,created_at,amount,category,country,quantity,email,description\r\n"
        out.write(header)
        written += len(header)
        while written < target:
            lines = []
            for _ in range(rows_per_chunk):
                row_id += 1
                u = f"{rng.getrandbits(128):032x}"
                ts = base + row_id * 7 + rng.randint(0, 5)
                hours, rem = divmod(ts % 86400, 3600)
                day = 1 + (ts // 86400) % 28
                lines.append(
                    f"{row_id},{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]},"
                    f"2024-{1 + row_id % 12:02d}-{day:02d}T{hours:02d}:{rem // 60:02d}:"
                    f"{rem % 60:02d}Z,"
                    f"{rng.random() * 10000:.2f},{rng.choice(CATEGORIES)},"
                    f"{rng.choice(COUNTRIES)},{rng.randint(1, 500)},"
                    f'user{row_id % 99991}@example.com,"{_text(rng)}"\r\n'
                )
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk.encode("utf-8"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=800)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(generate(args.out, megabytes=args.mb))


if __name__ == "__main__":
    main()
