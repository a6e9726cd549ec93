"""Unit tests of the processor's building blocks: part sizes, gzip, JSON Lines, typing policy,
termination message, URIs and settings."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pytest

from export_processor import termination
from export_processor.column_types import JSON_LITERAL, Typer, unique_names
from export_processor.errors import InvalidConfigError
from export_processor.jsonl import JsonLinesEncoder
from export_processor.locations import output_location, parse_location
from export_processor.progress import progress_body
from export_processor.settings import ProcessorSettings
from export_processor.sink import S3_MAX_PART_SIZE, S3_MAX_PARTS, part_size_for
from export_processor.writers import CsvWriter

MiB = 1024 * 1024


def test_part_sizes_grow_so_that_outputs_beyond_80_gb_fit_in_10000_parts() -> None:
    sizes = [part_size_for(n, base=8 * MiB) for n in range(1, S3_MAX_PARTS + 1)]
    assert sizes[0] == 8 * MiB and sizes[999] == 8 * MiB and sizes[1000] == 16 * MiB
    assert sum(sizes[:4000]) > 80 * 10**9
    assert sum(sizes) > 5 * 1024**4  # more than S3's largest object
    assert max(sizes) <= S3_MAX_PART_SIZE
    assert all(size >= 5 * MiB for size in sizes)


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("size", [0, 1, 100_000, 3 * MiB + 17])
def test_csv_gz_is_one_member_any_reader_decodes(size: int) -> None:
    rows = [f"{i},{i * 7919 % 1000},text {i % 13},{i / 7:.2f}" for i in range(200_000)]
    text = "".join(f"{row}\n" for row in rows)[:size]
    batch = pa.record_batch({"line": pa.array(text.split("\n"))})
    out = _Collect()
    writer = CsvWriter(sink=out, schema=batch.schema, gzip_level=1, gzip_threads=2)  # type: ignore[arg-type]
    for start in range(0, batch.num_rows, 7_000):
        writer.write(batch.slice(start, 7_000))
    writer.finish()
    payload = gzip.decompress(bytes(out.data))
    assert payload.count(b"\n") == batch.num_rows + 1
    # One member: a raw inflate of the body consumes everything up to the 8-byte trailer.
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(bytes(out.data[10:])) == payload
    assert len(inflater.unused_data) == 8
    assert bytes(out.data[4:8]) == b"\0\0\0\0"  # mtime 0: the same input, the same bytes
    # Close to serial gzip -1 in size (on CSV-like text; ISA-L's level 1 is usually smaller).
    assert len(out.data) <= len(gzip.compress(payload, 1)) * 1.05 + 64


def test_jsonl_escapes_every_control_character_and_keeps_types() -> None:
    texts = ["".join(chr(c) for c in range(32)), 'q"\\', "é🚀\u2028", "", None]
    batch = pa.record_batch(
        {
            "s": pa.array(texts),
            "i": pa.array([1, -2, None, 0, 5], pa.int64()),
            "f": pa.array([1.5, float("nan"), float("inf"), -0.25, None]),
            "b": pa.array([True, False, None, True, False]),
            'we"ird': pa.array(["x"] * 5),
        }
    )
    lines = JsonLinesEncoder(batch.schema).encode(batch).to_pybytes().split(b"\n")
    assert lines[-1] == b""
    objects = [json.loads(line) for line in lines[:-1]]
    assert [o["s"] for o in objects] == texts
    assert [o["i"] for o in objects] == [1, -2, None, 0, 5]
    assert [o["f"] for o in objects] == [1.5, None, None, -0.25, None]
    assert [o["b"] for o in objects] == [True, False, None, True, False]
    assert objects[0]['we"ird'] == "x"


def test_jsonl_batches_carry_the_printed_text_of_typed_values() -> None:
    """For JSON Lines the Typer hands over the text of each typed value (the source text of
    integers and booleans, the print-back of decimals) as JSON literals: the same lines as
    encoding the typed values, without printing them a second time."""
    names = ["i", "f", "b", "t"]
    text = pa.record_batch(
        {
            "i": pa.array(["1", "-20", None, "9007199254740993"]),
            "f": pa.array(["1.50", "0.1", "-2", None]),
            "b": pa.array(["true", None, "false", "true"]),
            "t": pa.array(["x", "1.0", None, ""]),
        }
    )
    literal = Typer(names, export_format="jsonl", mode="auto").apply(text)
    typed = Typer(names, export_format="parquet", mode="auto").apply(text)
    assert literal is not None and typed is not None
    assert literal.schema.types == [pa.string()] * 4
    assert [f.metadata for f in literal.schema] == [JSON_LITERAL] * 3 + [None]
    assert typed.schema.types == [pa.int64(), pa.float64(), pa.bool_(), pa.string()]
    lines = JsonLinesEncoder(literal.schema).encode(literal).to_pybytes()
    assert lines == JsonLinesEncoder(typed.schema).encode(typed).to_pybytes()
    assert [json.loads(line) for line in lines.splitlines()] == [
        {"i": 1, "f": 1.5, "b": True, "t": "x"},
        {"i": -20, "f": 0.1, "b": None, "t": "1.0"},
        {"i": None, "f": -2, "b": False, "t": None},
        {"i": 9007199254740993, "f": None, "b": True, "t": ""},
    ]


@pytest.mark.parametrize("with_nulls", [False, True])
def test_jsonl_matches_json_dumps_for_text_with_and_without_nulls_and_slices(
    with_nulls: bool,
) -> None:
    # Text columns without nulls get their quotes from the row join and are escaped by scanning
    # the whole column's bytes: cover every special character alone, together, at the edges of
    # values, in columns that need no escaping next to ones that do, and sliced batches (whose
    # value bytes start at an offset).
    specials = ['"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "é", "\u2028"]
    texts = ["", "plain", '\\"', '"\\\n', "a\\nb", "\\u0000"]
    texts += [f"{c}x{c}" for c in specials] + ["".join(specials)]
    if with_nulls:
        texts[1::4] = [None] * len(texts[1::4])
    size = len(texts)
    batch = pa.record_batch(
        {
            "t": pa.array(texts, pa.string()),
            "clean": pa.array([f"v{n}" for n in range(size)], pa.string()),
            "n": pa.array(range(size), pa.int64()),
            "last": pa.array(list(reversed(texts)), pa.string()),
        }
    )
    encoder = JsonLinesEncoder(batch.schema)
    for start, length in [(0, size), (3, size - 5), (size - 1, 1), (2, 0)]:
        part = batch.slice(start, length)
        expected = "".join(
            json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
            for row in part.to_pylist()
        )
        assert encoder.encode(part).to_pybytes() == expected.encode()


def test_unique_names() -> None:
    assert unique_names(["a", "a", "", "a_2", "a"]) == ["a", "a_2", "f2", "a_2_2", "a_3"]


def test_termination_message_is_capped_at_4_kib() -> None:
    long = "é" * 10_000
    text = termination.render({"error": {"code": "BAD_CSV", "message": long, "retryable": False}})
    assert len(text.encode("utf-8")) <= 4096
    parsed = json.loads(text)
    assert parsed["error"]["code"] == "BAD_CSV"
    assert parsed["error"]["message"].endswith("…")
    assert len(parsed["error"]["message"]) > 1000


def test_termination_message_written_only_where_kubernetes_expects_it(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    assert not termination.write(path, {"a": 1}, explicit=False)
    assert not path.exists()
    path.touch()
    assert termination.write(path, {"a": 1}, explicit=False)
    assert json.loads(path.read_text()) == {"a": 1}


def test_output_key_is_deterministic() -> None:
    source = parse_location("s3://in-bucket/dir/sub/report.2024.csv", prefix=False)
    dest = parse_location("s3://out-bucket/exports", prefix=True)
    out = output_location(source=source, destination=dest, export_format="csv.gz", export_name="e1")
    assert out.uri == "s3://out-bucket/exports/e1/report.2024.csv.gz"
    out = output_location(
        source=source, destination=dest, export_format="parquet", export_name=None
    )
    assert out.uri == "s3://out-bucket/exports/report.2024.parquet"


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3://ab/",
        "s3://Bad_Bucket/k",
        "ftp://x/y",
        "file://host/x",
        "file:///x/",
        "s3://bucket\n/k",
    ],
)
def test_bad_source_uris(uri: str) -> None:
    with pytest.raises(InvalidConfigError):
        parse_location(uri, prefix=False)


def test_s3_keys_keep_question_marks_and_hashes() -> None:
    assert parse_location("s3://bucket/a?b#c.csv", prefix=False).key == "a?b#c.csv"


def test_settings_from_env_and_overrides() -> None:
    env = {
        "EXPORTJOBS_SOURCE_URI": "s3://bucket/k.csv",
        "EXPORTJOBS_FORMAT": "csv",
        "EXPORTJOBS_DESTINATION_URI": "s3://bucket/out/",
        "EXPORTJOBS_CSV_DELIMITER": "\\t",
        "EXPORTJOBS_CSV_HEADER": "false",
        "EXPORTJOBS_S3_PART_SIZE_BYTES": str(16 * MiB),
        "EXPORTJOBS_MEMORY_LIMIT_BYTES": str(400 * MiB),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    settings = ProcessorSettings.from_env(env, export_format="parquet")
    assert settings.export_format == "parquet"
    assert settings.csv.delimiter == "\t"
    assert settings.csv.header is False
    assert settings.buffers.part_size == 16 * MiB
    assert settings.kube.api_url == "https://10.0.0.1:443"
    with pytest.raises(ValueError, match="part size"):
        ProcessorSettings.from_env({**env, "EXPORTJOBS_S3_PART_SIZE_BYTES": "1024"})
    with pytest.raises(ValueError, match="EXPORTJOBS_CSV_HEADER"):
        ProcessorSettings.from_env({**env, "EXPORTJOBS_CSV_HEADER": "maybe"})


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "parquet"])
def test_the_default_settings_bound_memory_under_300_mib_and_larger_ones_are_refused(
    fmt: str,
) -> None:
    env = {
        "EXPORTJOBS_SOURCE_URI": "s3://bucket/k.csv",
        "EXPORTJOBS_FORMAT": fmt,
        "EXPORTJOBS_DESTINATION_URI": "s3://bucket/out/",
    }
    assert ProcessorSettings.from_env(env).memory_bound() <= 300 * MiB
    for name, value in (
        ("EXPORTJOBS_BLOCK_SIZE_BYTES", 16 * MiB),
        ("EXPORTJOBS_BLOCKS_AHEAD", 32),
        ("EXPORTJOBS_S3_PART_SIZE_BYTES", 64 * MiB),
        ("EXPORTJOBS_S3_READ_AHEAD", 32),
        ("EXPORTJOBS_S3_UPLOAD_CONCURRENCY", 16),
    ):
        with pytest.raises(ValueError, match="EXPORTJOBS_MEMORY_LIMIT_BYTES"):
            ProcessorSettings.from_env({**env, name: str(value)})
    big = {**env, "EXPORTJOBS_BLOCK_SIZE_BYTES": str(16 * MiB)}
    allowed = ProcessorSettings.from_env({**big, "EXPORTJOBS_MEMORY_LIMIT_BYTES": str(1024 * MiB)})
    assert allowed.buffers.block_size == 16 * MiB


def test_progress_body() -> None:
    assert progress_body(bytes_read=50, bytes_total=200, rows=7) == {
        "status": {"progress": {"bytesRead": 50, "rows": 7, "bytesTotal": 200, "percent": 25}}
    }
    assert progress_body(bytes_read=5, bytes_total=None, rows=1) == {
        "status": {"progress": {"bytesRead": 5, "rows": 1}}
    }
    # A split export's range: its own entry, so ranges never overwrite each other.
    assert progress_body(bytes_read=5, bytes_total=9, rows=1, range_index=3) == {
        "status": {"progress": {"ranges": {"3": {"bytesRead": 5, "rows": 1, "bytesTotal": 9}}}}
    }
