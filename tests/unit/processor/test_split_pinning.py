"""One source version across a split export's processes (issue 23): the prepare step pins the
ETag (and the version id in a versioned bucket), every range and the finishing step read that
version, and the plan's digest names it. An object overwritten between ranges either fails the
export SOURCE_CHANGED (unversioned) or is read as the pinned version (versioned): never a mix.
Against a real S3 server: tests/cluster/processor/test_split_pinning_s3.py."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_processor.convert import Exporter
from export_processor.errors import SourceChangedError
from export_processor.ranges import RangePlan
from export_processor.settings import ProcessorSettings
from export_processor.source import SourcePin
from export_processor.split import Finisher, run_range
from export_processor.split_cli import pin_source

EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl"}


def _error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


class _Body:
    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)

    def read(self) -> bytes:
        return self._io.read()


class VersionedS3:
    """One key's versions; HEAD and ranged GET honour VersionId and IfMatch as S3 does."""

    def __init__(self, data: bytes, *, versioned: bool) -> None:
        self.versioned = versioned
        self.versions: list[bytes] = []
        self.asked: list[dict[str, Any]] = []
        self.put(data)

    def put(self, data: bytes) -> None:
        self.versions = [*self.versions, data] if self.versioned else [data]

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.md5(data).hexdigest() + '"'

    def _find(self, args: dict[str, Any]) -> tuple[bytes, str | None]:
        self.asked.append(args)
        version = args.get("VersionId")
        if version is None:
            found = self.versions[-1]
            number: int | None = len(self.versions) - 1
        elif not self.versioned or not version.isdigit() or int(version) >= len(self.versions):
            raise _error("NoSuchVersion", 404)
        else:
            number = int(version)
            found = self.versions[number]
        if args.get("IfMatch") not in (None, self.etag(found)):
            raise _error("PreconditionFailed", 412)
        return found, str(number) if self.versioned else None

    def head_object(self, **args: Any) -> dict[str, Any]:
        data, version = self._find(args)
        head = {"ContentLength": len(data), "ETag": self.etag(data)}
        return head | ({"VersionId": version} if version is not None else {})

    def get_object(self, **args: Any) -> dict[str, Any]:
        data, _ = self._find(args)
        start, end = (int(x) for x in args["Range"].removeprefix("bytes=").split("-"))
        return {"Body": _Body(data[start : end + 1])}


def _csv(rows: int, tag: str) -> bytes:
    return ("id,name\n" + "".join(f"{i},{tag}-{i}\n" for i in range(rows))).encode()


def _settings(tmp_path: Path, fmt: str, name: str = "ej") -> ProcessorSettings:
    return ProcessorSettings(
        source_uri="s3://bucket/in.csv",
        destination_uri=(tmp_path / name).as_uri() + "/",
        export_format=fmt,
        export_name=name,
        block_size_bytes=256,
        s3_read_chunk_bytes=512,
        s3_read_ahead=2,
    )


def _one_pod(tmp_path: Path, fmt: str, data: bytes) -> bytes:
    s3 = VersionedS3(data, versioned=False)
    Exporter(_settings(tmp_path, fmt, "whole"), s3_client=s3).run()
    return (tmp_path / "whole" / "whole" / ("in" + EXTENSIONS[fmt])).read_bytes()


def _split(
    tmp_path: Path, s3: VersionedS3, fmt: str, count: int, overwrite_after: int, new: bytes
) -> tuple[Finisher, list[Any]]:
    """Prepare, then the ranges one after another with the object overwritten after range
    `overwrite_after`; returns the finisher and the outcomes."""
    finisher = Finisher(_settings(tmp_path, fmt), s3, count)
    finisher.prepare()
    outcomes = []
    for index in range(count):
        outcomes.append(run_range(finisher.settings, s3, finisher._spec(index)))
        if index == overwrite_after:
            s3.put(new)
    return finisher, outcomes


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "ej").rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_prepare_step_pins_the_etag_and_every_range_reads_with_it(
    tmp_path: Path, fmt: str
) -> None:
    s3 = VersionedS3(_csv(300, "old"), versioned=False)
    finisher, outcomes = _split(tmp_path, s3, fmt, 3, overwrite_after=99, new=b"")
    pinned = s3.etag(_csv(300, "old"))
    assert finisher.settings.source_etag == pinned
    assert all(o.ok for o in outcomes)
    # Every HEAD and GET after the prepare step's HEAD carried If-Match with the pinned ETag.
    assert all(args.get("IfMatch") == pinned for args in s3.asked[1:])
    _, summary = finisher.finish(outcomes)
    assert summary["redone"] == []
    out = tmp_path / "ej" / "ej" / ("in" + EXTENSIONS[fmt])
    assert out.read_bytes() == _one_pod(tmp_path, fmt, _csv(300, "old"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_object_overwritten_between_ranges_fails_source_changed_and_leaves_nothing(
    tmp_path: Path, fmt: str
) -> None:
    s3 = VersionedS3(_csv(300, "old"), versioned=False)
    finisher, outcomes = _split(tmp_path, s3, fmt, 3, overwrite_after=0, new=_csv(300, "new"))
    assert outcomes[0].ok
    assert [o.error["code"] for o in outcomes[1:] if o.error] == ["SOURCE_CHANGED"] * 2
    with pytest.raises(SourceChangedError, match="changed"):
        finisher.finish(outcomes)
    assert _leftovers(tmp_path) == []


def test_an_object_overwritten_after_the_ranges_fails_the_finishing_step(tmp_path: Path) -> None:
    """The finishing step reads the head again (and may convert ranges again): the pinned
    version too, so a change after the last range fails it rather than mixing."""
    s3 = VersionedS3(_csv(300, "old"), versioned=False)
    finisher, outcomes = _split(tmp_path, s3, "csv", 2, overwrite_after=1, new=_csv(300, "new"))
    assert all(o.ok for o in outcomes)
    with pytest.raises(SourceChangedError):
        finisher.finish(outcomes)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_versioned_object_overwritten_between_ranges_is_read_as_the_pinned_version(
    tmp_path: Path, fmt: str
) -> None:
    s3 = VersionedS3(_csv(300, "old"), versioned=True)
    finisher, outcomes = _split(tmp_path, s3, fmt, 3, overwrite_after=0, new=_csv(500, "new"))
    assert finisher.settings.source_version_id == "0"
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    finisher.finish(outcomes)
    out = tmp_path / "ej" / "ej" / ("in" + EXTENSIONS[fmt])
    assert out.read_bytes() == _one_pod(tmp_path, fmt, _csv(300, "old"))
    assert all(args.get("VersionId") == "0" for args in s3.asked[1:])


@settings(max_examples=20, deadline=None)
@given(count=st.integers(2, 4), after=st.integers(0, 3), versioned=st.booleans())
def test_unpinned_ranges_that_read_two_versions_are_never_mixed(
    tmp_path_factory: pytest.TempPathFactory, count: int, after: int, versioned: bool
) -> None:
    """Ranges run without the prepare step's pin (by hand, or an older operator) each pin the
    version they see: ranges that read another version than the finishing step report another
    plan digest and are converted again, so the result is one version's single-pod output."""
    tmp_path = tmp_path_factory.mktemp("unpinned")
    old, new = _csv(200, "old"), _csv(260, "new")
    s3 = VersionedS3(old, versioned=versioned)
    finisher = Finisher(_settings(tmp_path, "csv"), s3, count)
    outcomes = []
    for index in range(count):
        outcomes.append(run_range(finisher.settings, s3, finisher._spec(index)))
        if index == after:
            s3.put(new)
    finisher.finish(outcomes)
    out = (tmp_path / "ej" / "ej" / "in.csv").read_bytes()
    # The version the finishing step read: the new one once it was written.
    assert out == _one_pod(tmp_path, "csv", new if after < count else old)


def test_the_plan_digest_names_the_version() -> None:
    plan = RangePlan(["id"], 3, ["int64"], 100, SourcePin('"a"').identity)
    other = RangePlan(["id"], 3, ["int64"], 100, SourcePin('"b"').identity)
    versioned = RangePlan(["id"], 3, ["int64"], 100, SourcePin('"a"', "v1").identity)
    assert len({plan.digest, other.digest, versioned.digest}) == 3


def test_pin_source_keeps_what_was_given_and_a_file_has_no_version(tmp_path: Path) -> None:
    s3 = VersionedS3(b"a\n1\n", versioned=True)
    given = pin_source(_settings(tmp_path, "csv"), s3)
    assert given == SourcePin(s3.etag(b"a\n1\n"), "0")
    assert given.as_json() == {"etag": s3.etag(b"a\n1\n"), "versionId": "0"}
    s3.put(b"a\n2\n")  # the version given stays readable
    assert pin_source(given.applied(_settings(tmp_path, "csv")), s3) == given
    overwritten = VersionedS3(b"x\n", versioned=False)
    with pytest.raises(SourceChangedError):
        pin_source(SourcePin(given.etag).applied(_settings(tmp_path, "csv")), overwritten)
    local = ProcessorSettings(
        source_uri=(tmp_path / "in.csv").as_uri(),
        destination_uri=tmp_path.as_uri() + "/",
        export_format="csv",
    )
    assert pin_source(local, None) == SourcePin()
    assert SourcePin().as_json() == {}
