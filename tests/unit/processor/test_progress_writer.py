"""The progress writer against an API server that goes away and comes back (a local HTTP server
whose answer the test sets): what it sends after an outage, and how its last patch waits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from export_processor.progress import ProgressReporter, progress_body
from export_processor.settings import KubeSettings


@dataclass
class FakeApiServer:
    """Answers PATCHes with `status` (0: closes the connection unanswered); keeps what it took."""

    url: str = ""
    status: int = 200
    taken: list[dict[str, object]] = field(default_factory=list)
    asked: int = 0


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    state = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.asked += 1
            if state.status == 0:
                self.close_connection = True
                self.connection.close()
                return
            if state.status < 300:
                state.taken.append(body["status"]["progress"])
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Counter:
    """The export's progress: rows grow by one at each sample."""

    def __init__(self) -> None:
        self.rows = 0
        self.done = False

    def sample(self) -> dict[str, object]:
        if not self.done:
            self.rows += 1
        return progress_body(bytes_read=self.rows, bytes_total=None, rows=self.rows)


def _reporter(
    api: FakeApiServer,
    tmp_path: Path,
    counter: Counter,
    *,
    final_wait: float = 30.0,
    url: str | None = None,
) -> ProgressReporter:
    token = tmp_path / "token"
    token.write_text("t")
    settings = KubeSettings(
        api_url=url or api.url,
        token_file=token,
        ca_file=None,
        progress_interval_seconds=0.02,
        request_timeout_seconds=1.0,
        final_wait_seconds=final_wait,
    )
    return ProgressReporter(settings=settings, namespace="ns", name="ej", sample=counter.sample)


def _until(what: str, probe: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("down", [503, 0], ids=["503", "no-answer"])
def test_after_an_outage_the_latest_progress_is_sent(
    api: FakeApiServer, tmp_path: Path, down: int, capsys: pytest.CaptureFixture[str]
) -> None:
    counter = Counter()
    reporter = _reporter(api, tmp_path, counter)
    reporter.start()
    _until("a patch taken", lambda: api.taken)
    api.status = down
    asked = api.asked
    _until("patches tried during the outage", lambda: api.asked >= asked + 5)
    before_outage = int(str(api.taken[-1]["rows"]))
    api.status = 200
    _until("a patch taken after the outage", lambda: api.taken[-1]["rows"] != before_outage)
    resumed_at = counter.rows
    reporter.stop(final=True)
    after = api.taken[-1]
    # Nothing queued from the outage is replayed: the first patch after it carries the moment's
    # progress, and the last one the export's end.
    assert after["rows"] == counter.rows >= resumed_at > before_outage + 5
    err = capsys.readouterr().err
    assert err.count("progress patch failed (ignored)") == 1, err
    assert "progress patches sent again after" in err


@pytest.mark.parametrize("down", [503, 0, 401, 403, 404], ids=lambda s: f"answer-{s}")
def test_the_last_patch_waits_for_the_api_server_to_come_back(
    api: FakeApiServer, tmp_path: Path, down: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Down (no answer, 503), or just started: a kube-apiserver answers 401, 403 or 404 until
    its caches are filled (seen in tests/cluster/processor/test_api_server_down.py)."""
    counter = Counter()
    reporter = _reporter(api, tmp_path, counter)
    reporter.start()
    _until("a patch taken", lambda: api.taken)
    api.status = down
    counter.done = True
    final = counter.sample()["status"]
    back = threading.Timer(1.5, lambda: setattr(api, "status", 200))
    back.start()
    started = time.monotonic()
    reporter.stop(final=True)
    waited = time.monotonic() - started
    assert {"progress": api.taken[-1]} == final
    assert 1.5 <= waited < 5, waited
    assert "progress patches sent again after" in capsys.readouterr().err


def test_the_wait_is_bounded(
    api: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = _reporter(api, tmp_path, Counter(), final_wait=1.0)
    assert reporter.patch_once()
    api.status = 0
    started = time.monotonic()
    reporter.stop(final=True)
    assert 1.0 <= time.monotonic() - started < 3
    assert "final progress not sent after" in capsys.readouterr().err


def test_a_signal_ends_the_wait(api: FakeApiServer, tmp_path: Path) -> None:
    reporter = _reporter(api, tmp_path, Counter())
    assert reporter.patch_once()
    api.status = 503
    interrupt = threading.Event()
    threading.Timer(0.5, interrupt.set).start()
    started = time.monotonic()
    reporter.stop(final=True, interrupt=interrupt)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [401, 403, 404, 422, 503])
def test_a_patch_never_taken_is_not_waited_for(
    api: FakeApiServer, tmp_path: Path, status: int
) -> None:
    """No patch of this process went through (no RBAC, a policy refusing it, an API server down
    from the start): the last one is tried once, the export's end not delayed."""
    api.status = status
    reporter = _reporter(api, tmp_path, Counter())
    started = time.monotonic()
    reporter.stop(final=True)
    assert time.monotonic() - started < 1
    assert api.asked == 1


def test_an_api_server_never_reached_is_not_waited_for(tmp_path: Path) -> None:
    """A pod that never reached the API server (a network policy, a wrong address): its last
    patch is tried once, and the export's end is not delayed."""
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()
    reporter = _reporter(FakeApiServer(), tmp_path, Counter(), url=url)
    started = time.monotonic()
    reporter.stop(final=True)
    assert time.monotonic() - started < 1
    assert reporter.patches_sent == 0
