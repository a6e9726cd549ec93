"""Split exports against the real S3 server (MinIO): the ranges' parts composed server-side
(UploadPartCopy, small parts joined), the result equal to the single-pod export's, a checksum
the client can verify, and nothing left behind (no part objects, no open multipart uploads)
after a success, a failure or a clean-up."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from export_processor.convert import Exporter
from export_processor.range_sink import parts_per_range
from export_processor.s3client import new_s3_client
from export_processor.settings import ProcessorSettings
from export_processor.split import Finisher, run_range, run_split
from tests.support.processor_inputs import EXT, FORMATS, MiB, medium_csv, run_cli


def _settings(bucket: str, fmt: str, out: str) -> ProcessorSettings:
    return ProcessorSettings.from_env(
        {},
        source_uri=f"s3://{bucket}/in/data.csv",
        destination_uri=f"s3://{bucket}/{out}/",
        export_format=fmt,
        export_name="ej-1",
        s3_part_size_bytes=5 * MiB,
    )


def _body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("count", [2, 5])
def test_split_export_equals_the_single_pod_export(
    s3_client: Any, s3_bucket: str, fmt: str, count: int
) -> None:
    """~25 MB of CSV: 2 ranges make parts over 5 MiB (copied), 5 ranges parts under it for the
    compressed formats (joined with the next part's first bytes)."""
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(250_000))
    client = new_s3_client(max_attempts=3, pool_size=8)
    single = Exporter(_settings(s3_bucket, fmt, "one"), s3_client=client).run()
    result, summary = run_split(_settings(s3_bucket, fmt, "split"), client, count)
    assert result.rows == single.rows == 250_000
    assert "fallback" not in summary, summary
    if fmt == "parquet":
        manifest_key, *keys = _keys(s3_client, s3_bucket, "split/")
        assert manifest_key == "split/ej-1/data/_manifest.json"
        assert keys == [f"split/ej-1/data/part-{i:05d}.parquet" for i in range(count)]
        manifest = json.loads(_body(s3_client, s3_bucket, manifest_key))
        one = pq.read_table(io.BytesIO(_body(s3_client, s3_bucket, "one/ej-1/data.parquet")))
        parts = [pq.read_table(io.BytesIO(_body(s3_client, s3_bucket, k))) for k in keys]
        assert all(p.schema == one.schema for p in parts)
        assert [r for p in parts for r in p.to_pylist()] == one.to_pylist()
        assert [p["rows"] for p in manifest["parts"]] == [p.num_rows for p in parts]
        digests = [hashlib.sha256(_body(s3_client, s3_bucket, k)).digest() for k in keys]
    else:
        key = f"split/ej-1/data{EXT[fmt]}"
        assert _keys(s3_client, s3_bucket, "split/") == [key]  # the parts are gone
        got, want = (
            _body(s3_client, s3_bucket, key),
            _body(s3_client, s3_bucket, f"one/ej-1/data{EXT[fmt]}"),
        )
        assert result.bytes == len(got)
        if fmt == "csv.gz":
            assert gzip.decompress(got) == gzip.decompress(want)
        else:
            assert got == want
        # The checksum a client verifies: sha256 over the sha256 of each run of partBytes.
        digests, position = [], 0
        for size in summary["partBytes"]:
            digests.append(hashlib.sha256(got[position : position + size]).digest())
            position += size
        assert position == len(got)
    assert result.sha256 == hashlib.sha256(b"".join(digests)).hexdigest()
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_split_export_through_the_cli_then_a_clean_up_leaves_nothing(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Ranges and the finishing step as separate processes (as in the Indexed Job); then a
    failed export's leftovers (a part, an upload a killed range never aborted) are removed."""
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(60_000))
    common = [
        *("--source", f"s3://{s3_bucket}/in/data.csv", "--format", "jsonl"),
        *("--destination", f"s3://{s3_bucket}/out/", "--export-name", "ej-2"),
        *("--range-count", "3"),
    ]
    payloads = []
    for index in range(3):
        code, _, err, payload = run_cli(*common, "--range-index", str(index), tmp_path=tmp_path)
        assert code == 0, err
        payloads.append({"index": index, "payload": payload})
    assert len(_keys(s3_client, s3_bucket, "out/ej-2/data.jsonl.parts/")) == 3
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    code, _, err, payload = run_cli(*common, "--finish-ranges", str(results), tmp_path=tmp_path)
    assert code == 0, err
    assert payload["rows"] == 60_000 and payload["uri"] == f"s3://{s3_bucket}/out/ej-2/data.jsonl"
    assert _keys(s3_client, s3_bucket, "out/") == ["out/ej-2/data.jsonl"]
    # A failed export: one part written, another range killed mid-upload (its upload open).
    s3_client.put_object(Bucket=s3_bucket, Key="out/ej-2/data.jsonl.parts/00000", Body=b"{}\n")
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="out/ej-2/data.jsonl.parts/00001")
    # And the export's own upload, its id lost (the prepare step killed after opening it).
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="out/ej-2/data.jsonl")
    code, _, err, payload = run_cli(*common, "--clean-ranges", tmp_path=tmp_path)
    assert code == 0, err
    assert _keys(s3_client, s3_bucket, "out/") == ["out/ej-2/data.jsonl"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_failed_split_export_leaves_no_parts(s3_client: Any, s3_bucket: str) -> None:
    """A ragged row in the last range: the export falls back to one pod, which fails; no part,
    no manifest, no upload is left."""
    data = medium_csv(60_000) + b"1,2\r\n"
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=data)
    client = new_s3_client(max_attempts=3, pool_size=8)
    from export_processor.errors import BadInputError

    for fmt in ("csv", "parquet"):
        with pytest.raises(BadInputError, match="Expected 5 columns, got 2"):
            run_split(_settings(s3_bucket, fmt, "bad"), client, 3)
        assert _keys(s3_client, s3_bucket, "bad/") == []
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def _quoted_newlines(rows: int) -> bytes:
    """Three of every four line ends are inside a quoted value of lines that look like rows
    (`1,yyy`): a guess at an offset is fooled three times in four (all three right: 1 in 64),
    and those ranges are redone."""
    lines = ["id,text"] + [
        f'{i},"row {i}\n1,{"y" * (i % 50)}\n2,""quoted""\n3,x"' for i in range(rows)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ranges_write_into_the_exports_upload_through_the_cli(
    s3_client: Any, s3_bucket: str, fmt: str, tmp_path: Path
) -> None:
    """--prepare-ranges, 4 ranges into the export's upload (small and large shares: edges joined,
    parts never copied), redone ranges, --finish-ranges: equal to one pod; then a prepared
    export cancelled after one range: --clean-ranges leaves nothing."""
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=_quoted_newlines(150_000))
    common = [
        *("--source", f"s3://{s3_bucket}/in/data.csv", "--format", fmt),
        *("--destination", f"s3://{s3_bucket}/out/", "--export-name", "ej-3"),
        *("--range-count", "4"),
    ]
    env = {"EXPORTJOBS_S3_PART_SIZE_BYTES": str(5 * MiB)}
    code, _, err, prepared = run_cli(*common, "--prepare-ranges", env=env, tmp_path=tmp_path)
    assert code == 0, err
    upload = ["--range-upload-id", prepared["uploadId"]]
    payloads, succeeded = [], []
    for index in range(4):
        code, _, err, payload = run_cli(
            *common, *upload, "--range-index", str(index), env=env, tmp_path=tmp_path
        )
        # A range whose start or end (the next one's start) was guessed inside a quoted value
        # may fail as bad input (exit 2): the finishing step redoes it from the verified start.
        assert code in (0, 2), err
        payloads.append({"index": index, "payload": payload})
        succeeded += [index] if code == 0 else []
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    code, _, err, final = run_cli(
        *common, *upload, "--finish-ranges", str(results), env=env, tmp_path=tmp_path
    )
    assert code == 0, err
    assert "fallback" not in final["split"], final
    assert final["split"]["redone"], "the quoted line ends fooled no guess: the test lost its point"
    client = new_s3_client(max_attempts=3, pool_size=8)
    single = Exporter(_settings(s3_bucket, fmt, "one"), s3_client=client).run()
    got = _body(s3_client, s3_bucket, f"out/ej-3/data{EXT[fmt]}")
    assert got == _body(s3_client, s3_bucket, f"one/ej-1/data{EXT[fmt]}")
    assert final["rows"] == single.rows == 150_000 and final["bytes"] == len(got)
    assert _keys(s3_client, s3_bucket, "out/") == [f"out/ej-3/data{EXT[fmt]}"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # Cancelled after one range (one that succeeded above: the same bytes, the same guesses):
    # its edges and parts, and the upload, go.
    assert succeeded, "every range failed: the guesses at all three offsets were fooled"
    code, _, err, prepared = run_cli(*common, "--prepare-ranges", env=env, tmp_path=tmp_path)
    upload = ["--range-upload-id", prepared["uploadId"]]
    one = ["--range-index", str(succeeded[0])]
    code, _, err, _ = run_cli(*common, *upload, *one, env=env, tmp_path=tmp_path)
    assert code == 0, err
    assert _keys(s3_client, s3_bucket, f"out/ej-3/data{EXT[fmt]}.parts/")  # its head
    code, _, err, _ = run_cli(*common, *upload, "--clean-ranges", env=env, tmp_path=tmp_path)
    assert code == 0, err
    assert _keys(s3_client, s3_bucket, "out/") == [f"out/ej-3/data{EXT[fmt]}"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


class _Gets:
    """An S3 client that records the keys it GETs."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.keys: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.keys.append(kwargs["Key"])
        return self._client.get_object(**kwargs)


def test_the_outer_edges_are_parts_at_once(s3_client: Any, s3_bucket: str) -> None:
    """Two ranges of ~12 MB of JSON Lines each, 5 MiB parts, into the export's upload: the first
    range's first part and the last range's tail go into it as parts; the finishing step
    downloads only the edges between the ranges (range 0's tail, range 1's head); the object
    equals one pod's."""
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=medium_csv(250_000))
    client = new_s3_client(max_attempts=3, pool_size=8)
    settings = _settings(s3_bucket, "jsonl", "edges")
    finisher = Finisher(settings, client, 2)
    finisher.prepare()
    outcomes = [run_range(settings, client, finisher._spec(i)) for i in range(2)]
    first, last = (o.report.upload if o.report else None for o in outcomes)
    assert first is not None and last is not None
    assert first["head"] == 0 and first["first"] == 1 and first["last"] >= 1, first
    assert last["head"] > 0 and last["last"] >= last["first"], last
    assert last["tail"] == 0 and last.get("tailPart") == 2 * parts_per_range(2) + 1, last
    gets = _Gets(client)
    result, summary = Finisher(settings, gets, 2, upload_id=finisher.upload_id).finish(outcomes)
    edges = [key for key in gets.keys if ".parts/" in key]
    assert edges == [
        "edges/ej-1/data.jsonl.parts/00000.tail",
        "edges/ej-1/data.jsonl.parts/00001.head",
    ]
    single = Exporter(_settings(s3_bucket, "jsonl", "one"), s3_client=client).run()
    got = _body(s3_client, s3_bucket, "edges/ej-1/data.jsonl")
    assert got == _body(s3_client, s3_bucket, "one/ej-1/data.jsonl")
    assert result.rows == single.rows and summary["partBytes"] and result.bytes == len(got)
    assert _keys(s3_client, s3_bucket, "edges/") == ["edges/ej-1/data.jsonl"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
