"""S3Source without S3: ranged GETs read into reused buffers (DownloadBuffers: a buffer is
written again only once nothing refers to its bytes, and an export read through them is the export
of the same bytes read from a file), and a bad input read from S3 failing at once. Against a real
S3 server: tests/cluster/processor/test_processor_s3.py."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest

from export_processor.convert import Exporter
from export_processor.errors import BadInputError, ExportError, TransientError
from export_processor.progress import ProgressState
from export_processor.s3_source import DownloadBuffers, S3Source, read_body_into
from export_processor.settings import KEPT_DOWNLOAD_BUFFERS, ProcessorSettings
from tests.support.corpus import CASES, EXTENSIONS

FORMATS = ["csv", "csv.gz", "jsonl", "parquet"]


def test_a_buffer_is_reused_only_once_every_view_of_it_is_gone() -> None:
    pool = DownloadBuffers(16)
    first = pool.take(16)
    first[:] = b"a" * 16
    handed = pool.hand_out(first)
    view = memoryview(handed)[4:8]
    arrow_slice = handed.slice(8, 4)
    del handed
    second = pool.take(16)
    assert second is not first  # a view and a slice are alive
    second[:] = b"b" * 16
    del view
    assert pool.take(16) is not first  # the slice still is
    assert arrow_slice.to_pybytes() == b"aaaa"
    del arrow_slice
    assert pool.take(16) is first
    assert pool.allocated == 3


def test_the_pool_keeps_only_a_few_free_buffers() -> None:
    pool = DownloadBuffers(16)
    taken = [pool.take(16) for _ in range(KEPT_DOWNLOAD_BUFFERS + 3)]
    handed = [pool.hand_out(buffer) for buffer in taken]
    del handed  # every buffer is free now: only KEPT_DOWNLOAD_BUFFERS stay in the pool
    again = [pool.take(16) for _ in range(KEPT_DOWNLOAD_BUFFERS + 1)]
    assert sum(any(a is t for t in taken) for a in again) == KEPT_DOWNLOAD_BUFFERS
    assert pool.allocated == len(taken) + 1


def test_a_short_last_range_gets_its_own_buffer_and_never_enters_the_pool() -> None:
    pool = DownloadBuffers(16)
    short = pool.take(5)
    handed = pool.hand_out(short)
    del handed
    assert pool.allocated == 0
    assert pool.take(16) is not short


class _Connection:
    """What urllib3's response offers: http.client's response as `_fp`, and the connection."""

    def __init__(self, data: bytes) -> None:
        self._fp = io.BufferedReader(io.BytesIO(data), buffer_size=7)  # short reads
        self.released = False
        self.closed = False

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class _Body:
    def __init__(self, data: bytes) -> None:
        self._raw_stream = _Connection(data)

    def read(self) -> bytes:  # pragma: no cover - read_body_into must not call it
        raise AssertionError("read() copies: readinto was expected")


def test_a_body_is_read_into_the_buffer_and_its_connection_returned_only_when_whole() -> None:
    whole = _Body(b"0123456789" * 10)
    target = bytearray(100)
    assert read_body_into(whole, memoryview(target)) == 100
    assert bytes(target) == b"0123456789" * 10
    assert whole._raw_stream.released and not whole._raw_stream.closed
    short = _Body(b"abc")
    assert read_body_into(short, memoryview(bytearray(10))) == 3
    # A body shorter than its range: the connection is closed, never reused.
    assert short._raw_stream.closed and not short._raw_stream.released


class _PlainBody:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


def test_a_body_without_an_http_response_underneath_is_read_and_copied() -> None:
    target = bytearray(4)
    assert read_body_into(_PlainBody(b"wxyz"), memoryview(target)) == 4
    assert target == b"wxyz"


class _FakeS3:
    """head_object and ranged get_object over bytes, each body an HTTP-like response."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.gets = 0

    def head_object(self, **args: Any) -> dict[str, Any]:
        return {"ContentLength": len(self.data), "ETag": '"fake"'}

    def get_object(self, **args: Any) -> dict[str, Any]:
        start, end = (int(x) for x in args["Range"].removeprefix("bytes=").split("-"))
        self.gets += 1
        return {"Body": _Body(self.data[start : end + 1])}


def _big_csv(rows: int) -> bytes:
    rng = random.Random(7)
    lines = ["id,amount,when,flag,text"]
    for i in range(rows):
        text = rng.choice(["plain", 'with "quotes"', "line\nbreak", "comma, inside", "東京", ""])
        quoted = '"' + text.replace('"', '""') + '"' if text else ""
        lines.append(
            f"{i},{rng.randint(0, 10**6) / 100},2024-01-{1 + i % 28:02d}T00:00:00Z,"
            f"{rng.choice(['true', 'false'])},{quoted}"
        )
    return ("\r\n".join(lines) + "\r\n").encode()


def _export(tmp_path: Path, source_uri: str, fmt: str, client: Any, args: dict[str, Any]) -> bytes:
    out = tmp_path / ("s3" if client is not None else "file")
    exporter = Exporter(
        ProcessorSettings(
            source_uri=source_uri,
            destination_uri=out.as_uri() + "/",
            export_format=fmt,
            block_size_bytes=8192,
            s3_read_chunk_bytes=16384,
            s3_read_ahead=3,
            **args,
        ),
        s3_client=client,
    )
    exporter.run()
    if client is not None:
        source = exporter._source
        assert isinstance(source, S3Source)
        # Buffers were reused: far fewer made than ranges read (not a vacuous pass).
        assert source._downloads.buffers.allocated < max(client.gets // 2, 12), (
            source._downloads.buffers.allocated,
            client.gets,
        )
    return (out / ("in" + EXTENSIONS[fmt])).read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_read_through_reused_buffers_equals_the_export_of_the_file(
    tmp_path: Path, fmt: str
) -> None:
    data = _big_csv(20000)  # ~60 ranges of 16 KiB, parsed on Arrow's threads
    (tmp_path / "in.csv").write_bytes(data)
    client = _FakeS3(data)
    from_s3 = _export(tmp_path, "s3://bucket/in.csv", fmt, client, {})
    from_file = _export(tmp_path, (tmp_path / "in.csv").as_uri(), fmt, None, {})
    assert client.gets >= 30
    if fmt == "parquet":
        assert pa.BufferReader(from_s3).size() > 0
        import pyarrow.parquet as pq

        assert pq.read_table(pa.BufferReader(from_s3)).equals(
            pq.read_table(pa.BufferReader(from_file))
        )
    else:
        assert from_s3 == from_file


def _s3_export(tmp_path: Path, data: bytes, fmt: str = "jsonl") -> bytes:
    out = tmp_path / "s3"
    Exporter(
        ProcessorSettings(
            source_uri="s3://bucket/in.csv",
            destination_uri=out.as_uri() + "/",
            export_format=fmt,
            block_size_bytes=8192,
            s3_read_chunk_bytes=16384,
        ),
        s3_client=cast(Any, _FakeS3(data)),
    ).run()
    return (out / ("in" + EXTENSIONS[fmt])).read_bytes()


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c.args and not c.env], ids=lambda c: c.name
)
def test_every_corpus_case_exports_the_same_from_s3_as_from_a_file(
    tmp_path: Path, case: Any
) -> None:
    (tmp_path / "in.csv").write_bytes(case.data)
    try:
        from_file = _export(tmp_path, (tmp_path / "in.csv").as_uri(), "jsonl", None, {})
    except ExportError as exc:  # a bad input: the same error from S3
        with pytest.raises(type(exc)) as raised:
            _s3_export(tmp_path, case.data)
        assert raised.value.message == exc.message
        return
    assert _s3_export(tmp_path, case.data) == from_file


def test_a_row_longer_than_two_blocks_read_from_s3_fails_at_once(tmp_path: Path) -> None:
    """pyarrow's open_csv waited for a read-ahead the throttle held for a batch the writer would
    never take: the BAD_CSV came after 60 s, in about one run of six."""
    data = b"a,b\n" + b"1," + b"x" * 40_000 + b"\n2,y\n" + b"3,z\n" * 20_000
    for attempt in range(8):
        started = time.monotonic()
        with pytest.raises(BadInputError, match="longer than 8192 bytes"):
            _s3_export(tmp_path / str(attempt), data)
        assert time.monotonic() - started < 10, attempt


class _CutS3(_FakeS3):
    """Its first `cuts` bodies end early: reset after half, or closed after half (short)."""

    def __init__(self, data: bytes, *, cuts: int, how: str) -> None:
        super().__init__(data)
        self.cuts, self.how, self.cut_bytes = cuts, how, 0

    def get_object(self, **args: Any) -> dict[str, Any]:
        response = super().get_object(**args)
        if self.cuts <= 0:
            return response
        self.cuts -= 1
        whole = response["Body"]._raw_stream._fp.read()
        keep = len(whole) // 2
        self.cut_bytes += keep
        body = _Body(whole[:keep])
        if self.how == "reset":
            inner = body._raw_stream._fp

            class _Resetting(io.RawIOBase):
                def readinto(self, target: Any) -> int:
                    count = inner.readinto(target)
                    if not count:
                        raise ConnectionResetError(104, "Connection reset by peer")
                    return count

            body._raw_stream._fp = _Resetting()
        return {"Body": body}


@pytest.mark.parametrize("how", ["reset", "short"])
def test_a_range_cut_mid_body_is_read_again_and_counted(tmp_path: Path, how: str) -> None:
    data = _big_csv(5000)
    (tmp_path / "in.csv").write_bytes(data)
    client = _CutS3(data, cuts=3, how=how)
    progress = ProgressState()
    out = tmp_path / "s3"
    result = Exporter(
        ProcessorSettings(
            source_uri="s3://bucket/in.csv",
            destination_uri=out.as_uri() + "/",
            export_format="csv",
            block_size_bytes=8192,
            s3_read_chunk_bytes=16384,
        ),
        s3_client=cast(Any, client),
        progress=progress,
    ).run()
    assert client.cuts == 0 and client.cut_bytes > 0
    assert result.bytes_read == len(data) + client.cut_bytes
    assert progress.bytes_read == result.bytes_read
    expected = _export(tmp_path, (tmp_path / "in.csv").as_uri(), "csv", None, {})
    assert (out / "in.csv").read_bytes() == expected


def test_a_range_cut_every_time_fails_as_retryable(tmp_path: Path) -> None:
    data = _big_csv(500)
    client = _CutS3(data, cuts=10**6, how="short")
    with pytest.raises(TransientError, match="cut 5 times"):
        Exporter(
            ProcessorSettings(
                source_uri="s3://bucket/in.csv",
                destination_uri=(tmp_path / "o").as_uri() + "/",
                export_format="csv",
                block_size_bytes=8192,
                s3_read_chunk_bytes=16384,
            ),
            s3_client=cast(Any, client),
        ).run()
