"""The `exportjobs` CLI against a fake webhook (a stdlib HTTP server in a thread)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_operator.cli.client import Client, id_from_location
from export_operator.cli.main import Exit, main, parser, wait_for
from export_operator.cli.progress import Display, bar, describe, percent


class FakeWebhook(BaseHTTPRequestHandler):
    """Answers like the webhook: a POST makes an export that runs through `script` on GETs."""

    exports: dict[str, list[dict[str, Any]]]
    requests: list[tuple[str, str, dict[str, str], Any]]
    data = b"a,b\n1,2\n"

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != "Bearer t0ken":
            self._send(401, {"code": "unauthorized", "detail": "no token"})
            return False
        return True

    def do_POST(self) -> None:
        body = self._record()
        if not self._authorised():
            return
        if "nope" in body.get("source", ""):
            self._send(422, {"code": "source-not-allowed", "detail": "not allowed"})
            return
        export_id = "ej-" + body["format"].replace(".", "")
        self._send(
            202, {"id": export_id, "status": "Pending", "status_url": f"/v1/exports/{export_id}"}
        )

    def do_GET(self) -> None:
        self._record()
        if self.path.startswith("/file"):
            self._send(200, self.data, "application/octet-stream")
            return
        if not self._authorised():
            return
        if self.path.startswith("/v1/exports?"):
            if "continue=p2" in self.path:
                self._send(200, {"items": [{"id": "b", "status": "Failed"}], "continue": None})
            else:
                self._send(200, {"items": [{"id": "a", "status": "Running"}], "continue": "p2"})
            return
        export_id = self.path.rsplit("/", 1)[-1]
        script = self.exports.get(export_id)
        if not script:
            self._send(404, {"code": "not-found", "detail": export_id})
            return
        state = script.pop(0) if len(script) > 1 else script[0]
        self._send(200, {"id": export_id, **state})

    def do_DELETE(self) -> None:
        self._record()
        self._send(202, {"id": self.path.rsplit("/", 1)[-1], "status": "Running"})


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[FakeWebhook]]]:
    handler = type("Handler", (FakeWebhook,), {"exports": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _cli(url: str, *argv: str, token: str = "t0ken") -> int:
    return main(["--url", url, "--token", token, *argv])


def test_submit_prints_the_id_and_sends_the_request(
    webhook: tuple[str, type[FakeWebhook]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = webhook
    code = _cli(url, "submit", "s3://in/a.csv", "--format", "parquet", "--idempotency-key", "k1")
    assert code == Exit.OK
    assert capsys.readouterr().out == "ej-parquet\n"
    method, path, headers, body = handler.requests[0]
    assert (method, path) == ("POST", "/v1/exports")
    assert body == {"source": "s3://in/a.csv", "format": "parquet"}
    assert headers["Idempotency-Key"] == "k1"


@pytest.mark.parametrize(
    ("final", "code"),
    [("Succeeded", Exit.OK), ("Failed", Exit.FAILED), ("Cancelled", Exit.CANCELLED)],
)
def test_wait_exit_code_says_how_the_export_ended(
    webhook: tuple[str, type[FakeWebhook]],
    capsys: pytest.CaptureFixture[str],
    final: str,
    code: Exit,
) -> None:
    url, handler = webhook
    handler.exports["e1"] = [
        {"status": "Queued", "queue_position": 2},
        {"status": "Running", "progress": {"percent": 40.0, "rows": 1200}},
        {"status": final},
    ]
    assert _cli(url, "wait", "e1", "--interval", "0.01") == code
    lines = capsys.readouterr().err.splitlines()  # not a terminal: one plain line per state
    assert lines[0].startswith("Queued") and "queue position 2" in lines[0]
    assert lines[1].startswith("Running") and "40.0%" in lines[1] and "rows 1,200" in lines[1]
    assert lines[2].startswith(final)


def test_submit_wait_download_writes_the_output(
    webhook: tuple[str, type[FakeWebhook]], tmp_path: Path
) -> None:
    url, handler = webhook
    handler.exports["ej-csv"] = [
        {"status": "Running"},
        {
            "status": "Succeeded",
            "result": {"uri": "s3://out/x/a.csv", "download_url": f"{url}/file?sig=1"},
        },
    ]
    target = tmp_path / "a.csv"
    code = _cli(
        url, "submit", "s3://in/a.csv", "-f", "csv", "--download", str(target), "--interval", "0.01"
    )
    assert code == Exit.OK
    assert target.read_bytes() == FakeWebhook.data
    assert not (tmp_path / "a.csv.part").exists()
    # the presigned URL is S3's: no bearer token goes there
    download = next(r for r in handler.requests if r[1].startswith("/file"))
    assert "Authorization" not in download[2]


def test_timeout_refusal_and_unreachable_have_their_codes(
    webhook: tuple[str, type[FakeWebhook]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = webhook
    handler.exports["slow"] = [{"status": "Running"}]
    assert _cli(url, "wait", "slow", "--timeout", "0.05", "--interval", "0.01") == Exit.TIMEOUT
    assert _cli(url, "submit", "s3://nope/a.csv", "-f", "csv") == Exit.REFUSED
    assert "422 source-not-allowed" in capsys.readouterr().err
    assert _cli(url, "get", "missing") == Exit.REFUSED
    assert _cli(url, "get", "x", token="wrong") == Exit.REFUSED
    assert _cli("http://127.0.0.1:9", "get", "x") == Exit.UNREACHABLE


def test_download_of_an_unfinished_export_says_so(
    webhook: tuple[str, type[FakeWebhook]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = webhook
    handler.exports["f"] = [{"status": "Failed", "error": {"code": "BAD_CSV", "message": "x"}}]
    assert _cli(url, "download", "f") == Exit.FAILED
    assert "nothing to download" in capsys.readouterr().err


def test_list_follows_continue_tokens_and_cancel_deletes(
    webhook: tuple[str, type[FakeWebhook]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = webhook
    assert _cli(url, "list", "--phase", "Running", "--json") == Exit.OK
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["a", "b"]
    assert "phase=Running" in handler.requests[0][1]
    assert (
        _cli(url, "list", "--source-prefix", "s3://in/a/", "--since", "2026-11-01T00:00:00Z") == 0
    )
    assert "source_prefix=s3%3A%2F%2Fin%2Fa%2F" in handler.requests[-1][1]
    assert "created_since=2026-11-01T00%3A00%3A00Z" in handler.requests[-1][1]
    capsys.readouterr()
    assert _cli(url, "cancel", "e9") == Exit.OK
    assert handler.requests[-1][:2] == ("DELETE", "/v1/exports/e9")


def test_url_and_token_come_from_the_environment(
    webhook: tuple[str, type[FakeWebhook]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = webhook
    handler.exports["e"] = [{"status": "Succeeded"}]
    monkeypatch.setenv("EXPORTJOBS_URL", url)
    monkeypatch.setenv("EXPORTJOBS_TOKEN", "t0ken")
    assert main(["wait", "e"]) == Exit.OK
    monkeypatch.delenv("EXPORTJOBS_URL")
    assert main(["get", "e"]) == Exit.USAGE


def test_a_terminal_gets_one_redrawn_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    display = Display(out, tty=True)
    display.show({"status": "Running", "progress": {"bytesRead": 50, "bytesTotal": 200}})
    display.show({"status": "Running", "progress": {"bytesRead": 50, "bytesTotal": 200}})
    display.show({"status": "Succeeded", "progress": {"percent": 100}})
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[######" in text and " 25.0%" in text


# Anything JSON the API could send as an export: rendering never raises.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
exports = st.fixed_dictionaries(
    {},
    optional={
        "status": json_values | st.sampled_from(["Running", "Succeeded", "Queued"]),
        "progress": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "percent": json_values,
                "rows": json_values,
                "bytesRead": json_values,
                "bytesTotal": json_values,
            },
        ),
        "queue_position": json_values,
        "error": json_values,
        "result": json_values,
    },
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports)
def test_rendering_any_export_body_never_fails(export: dict[str, Any]) -> None:
    share = percent(export)
    assert share is None or 0.0 <= share <= 100.0
    assert describe(export).isprintable()
    assert len(bar(export)) == 26


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_the_id_is_the_last_segment_of_any_location(export_id: str) -> None:
    from urllib.parse import quote

    if "/" in export_id or not export_id.strip("/"):
        return
    assert id_from_location("/v1/exports/" + quote(export_id, safe="")) == export_id
    assert (
        id_from_location("https://h.example/prefix/v1/exports/" + quote(export_id, safe="") + "/")
        == export_id
    )


@settings(deadline=None)
@given(st.lists(st.text(max_size=12), max_size=6))
def test_any_command_line_parses_or_exits_with_usage(argv: list[str]) -> None:
    try:
        parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code in (0, 2)


def test_wait_polls_until_final_without_real_sleeps() -> None:
    states = iter([{"status": "Running"}, {"status": "Running"}, {"status": "Succeeded"}])

    class Stub(Client):
        def get(self, export_id: str) -> dict[str, Any]:
            return next(states)

    slept: list[float] = []
    out = io.StringIO()
    last = wait_for(
        Stub("http://x"),
        "e",
        display=Display(out, tty=False),
        timeout=None,
        interval=2.0,
        sleep=slept.append,
    )
    assert last["status"] == "Succeeded" and slept == [2.0, 2.0]
    assert out.getvalue().count("\n") == 2  # an unchanged state is not printed twice
