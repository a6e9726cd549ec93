"""Split exports' pieces (docs/processor.md, "Splitting"): row boundaries, the composition plan
(S3's 5 MiB minimum part), the kinds merge, the finishing step's verification and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_processor import cli
from export_processor.compose import copy_plan
from export_processor.range_bounds import RangeSource, boundary_after
from export_processor.range_export import RangeExporter
from export_processor.ranges import RangeReport, RangeSpec
from export_processor.settings import ProcessorSettings
from export_processor.split import Finisher, merge_kinds, run_range, run_split


@pytest.mark.parametrize(
    ("window", "at_least", "at_end", "want"),
    [
        (b"ab\ncd\n", 0, False, 3),
        (b"ab\ncd\n", 4, False, 6),
        (b"ab\r\ncd", 0, False, 4),  # CRLF: after its \n
        (b"ab\rcd", 0, False, 3),  # a lone \r ends a line
        (b"ab\r", 0, False, None),  # a \n may follow
        (b"ab\r", 0, True, 3),
        (b"abc", 0, True, None),
    ],
)
def test_boundary_after(window: bytes, at_least: int, at_end: bool, want: int | None) -> None:
    assert boundary_after(window, 0, at_least, at_end=at_end) == want


@given(sizes=st.lists(st.integers(0, 40), max_size=12))
def test_copy_plan_parts_respect_the_minimum_and_cover_every_byte(sizes: list[int]) -> None:
    parts = copy_plan(sizes, minimum=10, maximum=25)
    runs = [run for part in parts for run in part]
    covered = [(piece, byte) for piece, start, end, _ in runs for byte in range(start, end)]
    assert covered == [(piece, byte) for piece, size in enumerate(sizes) for byte in range(size)]
    for number, part in enumerate(parts):
        size = sum(end - start for _, start, end, _ in part)
        assert size <= 25 or len(part) > 1
        assert size >= 10 or number == len(parts) - 1, (sizes, parts)
        assert all(not copy for *_, copy in part) or len(part) == 1
    copied = sum(end - start for part in parts for _, start, end, copy in part if copy)
    if all(size >= 10 for size in sizes):
        assert copied == sum(sizes)  # nothing downloaded when no part is small


def _report(kinds: list[str], bounds: dict[int, tuple[int, int]] | None = None) -> RangeReport:
    return RangeReport(0, 1, 0, False, "", 0, kinds, bounds or {})


def test_merge_kinds_is_what_one_pod_ends_with() -> None:
    small, big = (0, 5), (0, 10**12)
    assert merge_kinds(["int64"], [_report(["int64"], {0: small})] * 2) == ["int64"]
    assert merge_kinds(["int64"], [_report(["int64"], {0: small}), _report(["float64"])]) == [
        "float64"
    ]
    # An integer a double prints otherwise, before or after the decimal: text, as in one pod.
    assert merge_kinds(["int64"], [_report(["int64"], {0: big}), _report(["float64"])]) == ["text"]
    assert merge_kinds(["int64"], [_report(["float64"]), _report(["int64"], {0: big})]) == ["text"]
    assert merge_kinds(["bool"], [_report(["bool"]), _report(["text"])]) == ["text"]
    assert merge_kinds(["date32"], [_report(["date32"])] * 3) == ["date32"]


def _settings(tmp_path: Path, fmt: str = "csv") -> ProcessorSettings:
    return ProcessorSettings(
        source_uri=(tmp_path / "in.csv").as_uri(),
        destination_uri=(tmp_path / "out").as_uri() + "/",
        export_format=fmt,
        block_size_bytes=64,
    )


def test_a_range_started_inside_a_quoted_value_is_redone_from_the_verified_boundary(
    tmp_path: Path,
) -> None:
    data = b'v\nab\n"x\ny"\nz\n'
    (tmp_path / "in.csv").write_bytes(data)
    cut = data.index(b"y")  # right after the quoted line end: the guess is wrong
    wrong = run_range(_settings(tmp_path), None, RangeSpec(1, 2, cuts=(cut,)))
    assert wrong.report is not None and wrong.report.guessed and wrong.result is not None
    assert wrong.report.start == cut  # its own parse succeeded, on the wrong rows
    # Range 0 ended at that guess too (no quote counted): its parse, from the verified start,
    # had a quote open there and failed. Both are redone, range 0 finding its end by parity.
    ended_there = run_range(_settings(tmp_path), None, RangeSpec(0, 2, cuts=(cut,)))
    assert ended_there.error is not None and ended_there.error["code"] == "BAD_CSV"
    _, summary = run_split(_settings(tmp_path), None, 2, (cut,))
    assert summary["redone"] == [0, 1]
    assert (tmp_path / "out" / "in.csv").read_bytes() == b'"v"\n"ab"\n"x\ny"\n"z"\n'
    assert not (tmp_path / "out" / "in.csv.parts").exists()


def test_a_range_whose_kinds_are_narrower_is_redone_with_the_merged_kinds(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(40)] + [f"{i},{i}.5" for i in range(40)]
    data = ("a,b\n" + "\n".join(rows) + "\n").encode()
    (tmp_path / "in.csv").write_bytes(data)
    cut = data.index(b"0,0.5")  # the first range has integers only
    _, summary = run_split(_settings(tmp_path, "parquet"), None, 2, (cut,))
    assert summary["redone"] == [0]
    manifest = json.loads((tmp_path / "out" / "in" / "_manifest.json").read_text())
    assert manifest["columns"] == [
        {"name": "a", "kind": "int64"},
        {"name": "b", "kind": "float64"},
    ]
    assert sum(part["rows"] for part in manifest["parts"]) == 80


def test_bad_input_in_a_verified_range_falls_back_to_one_pod(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b"a,b\n1,2\n3,4\n5\n6,7\n")
    with pytest.raises(Exception, match="columns") as failure:
        run_split(_settings(tmp_path), None, 2)
    assert "Expected 2 columns" in str(failure.value)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_cli_runs_ranges_then_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["id,text"] + [f'{i},"row {i}\nsecond line"' for i in range(30)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    common = [
        *("--source", (tmp_path / "in.csv").as_uri()),
        *("--destination", (tmp_path / "out").as_uri() + "/", "--format", "jsonl"),
        *("--range-count", "3"),
    ]
    payloads = []
    for index in range(3):
        message = tmp_path / f"message-{index}"
        code = cli.run(
            [*common, "--range-index", str(index), "--termination-message-path", str(message)]
        )
        payload = json.loads(message.read_text())
        assert payload["range"]["index"] == index
        assert code == 0, payload
        payloads.append({"index": index, "payload": payload})
    capsys.readouterr()
    results = tmp_path / "results.json"
    results.write_text(json.dumps(payloads))
    assert cli.run([*common, "--finish-ranges", str(results)]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["rows"] == 30
    assert final["split"]["ranges"] == 3
    # The line ends inside the quoted values were not guessed: the line after one has 1 field.
    assert final["split"]["redone"] == []
    assert sum(final["split"]["partBytes"]) == final["bytes"]
    assert (tmp_path / "out" / "in.jsonl").stat().st_size == final["bytes"]


def test_a_file_source_is_not_closed_under_a_read(tmp_path: Path) -> None:
    """A range closes the head's source while the parser it abandoned may still be reading it:
    a descriptor closed under a read can be reused by the range's own open, and that read then
    takes the range's bytes. close() waits for the read in the file."""
    import threading
    import time

    from export_processor.source import FileSource

    (tmp_path / "in.csv").write_bytes(b"x" * 1000)
    source = FileSource(str(tmp_path / "in.csv"))
    real = source._file
    events: list[str] = []

    class Slow:
        closed = False

        def read(self, size: int) -> bytes:
            events.append("read starts")
            time.sleep(0.3)
            data = real.read(size)
            events.append("read ends")
            return data

        def close(self) -> None:
            events.append("close")
            real.close()

    source._file = Slow()  # type: ignore[assignment]
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(source.read(100)))
    reader.start()
    time.sleep(0.05)
    source.close()
    reader.join()
    assert events == ["read starts", "read ends", "close"]
    assert got == [b"x" * 100]


@pytest.mark.parametrize("widened_in_both", [False, True])
def test_the_finishing_step_parses_the_first_block_only_when_no_range_kept_its_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, widened_in_both: bool
) -> None:
    """The ranges' plan digest covers the first block's kinds: the kinds a range ended with, when
    they give that digest, are the first block's, so the finishing step does not parse it
    again; when every range widened a column, it must."""
    rows = [f"{i},{i}" for i in range(40)] + [f"{i},{i}.5" for i in range(40)]
    if widened_in_both:
        rows[30] = "30,30.5"  # after the first 64-byte block, before the cut
    data = ("a,b\n" + "\n".join(rows) + "\n").encode()
    (tmp_path / "in.csv").write_bytes(data)
    cut = data.index(b"0,0.5")
    settings = _settings(tmp_path, "parquet")
    outcomes = [run_range(settings, None, RangeSpec(i, 2, cuts=(cut,))) for i in range(2)]
    parsed: list[int] = []
    first_block_kinds = RangeExporter._first_block_kinds

    def counted(self: RangeExporter, *args: Any) -> Any:
        parsed.append(1)
        return first_block_kinds(self, *args)

    monkeypatch.setattr(RangeExporter, "_first_block_kinds", counted)
    _, summary = Finisher(settings, None, 2, cuts=(cut,)).finish(outcomes)
    assert parsed == ([1] if widened_in_both else [])
    assert summary["redone"] == ([] if widened_in_both else [0])
    manifest = json.loads((tmp_path / "out" / "in" / "_manifest.json").read_text())
    assert [c["kind"] for c in manifest["columns"]] == ["int64", "float64"]
    assert sum(part["rows"] for part in manifest["parts"]) == 80


def test_the_preparation_starts_without_the_converting_modules(tmp_path: Path) -> None:
    """`--prepare-ranges` is a step of its own before any range starts: it imports nothing of
    pyarrow (a third of a start's CPU, at half a core half a second of the split's time)."""
    argv = [
        *("--source", (tmp_path / "in.csv").as_uri(), "--format", "jsonl"),
        *("--destination", (tmp_path / "out").as_uri() + "/", "--range-count", "2"),
        "--prepare-ranges",
    ]
    script = (
        "import sys\n"
        "from export_processor import cli\n"
        f"code = cli.run({argv!r})\n"
        "assert 'pyarrow' not in sys.modules, sorted(m for m in sys.modules if 'arrow' in m)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"uploadId": None, "source": {}}  # a file: no version


def test_a_range_ends_at_the_next_ranges_guess_without_counting_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting the quotes of a range (its bytes read once more, a tenth of a second per
    200 MB) is left to a redo from a verified start: a range ends where the next one guesses
    its start."""
    lines = ["id,text"] + [f'{i},"row {i}, ""quoted""\nsecond line"' for i in range(60)]
    data = ("\r\n".join(lines) + "\r\n").encode()
    (tmp_path / "in.csv").write_bytes(data)
    cut = len(data) // 2
    counting: list[bytes | None] = []
    init = RangeSource.__init__

    def spy(self: RangeSource, inner: Any, cut: Any) -> None:
        init(self, inner, cut)
        counting.append(inner.quotes and inner.quotes.byte)

    monkeypatch.setattr(RangeSource, "__init__", spy)
    first, second = (
        run_range(_settings(tmp_path), None, RangeSpec(i, 2, cuts=(cut,))) for i in (0, 1)
    )
    assert first.report is not None and second.report is not None
    assert first.report.end == second.report.start and second.report.guessed
    assert counting == [None, None]
    redo = RangeSpec(0, 2, cuts=(cut,), start=first.report.start, parity_end=True)
    redone = run_range(_settings(tmp_path), None, redo)
    assert redone.report is not None and redone.report.end == first.report.end
    assert counting[-1] == b'"'
