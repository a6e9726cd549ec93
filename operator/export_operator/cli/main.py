"""`exportjobs`: submit, get, list, wait for, cancel and download exports (docs/cli.md)."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from export_operator.cli.client import ApiError, Client, ConnectError, write_atomically
from export_operator.cli.progress import FINAL, Display, describe

FORMATS = ("csv", "csv.gz", "jsonl", "parquet")
PHASES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled")


class Exit(enum.IntEnum):
    """The exit codes, one per outcome a script branches on (docs/cli.md)."""

    OK = 0
    """The command did what it was asked; `wait` and `submit --wait`: the export Succeeded."""
    FAILED = 1
    """The export ended Failed."""
    USAGE = 2
    """The command line is wrong (argparse's own code)."""
    CANCELLED = 3
    """The export ended Cancelled."""
    TIMEOUT = 4
    """`--timeout` passed before the export finished (it goes on)."""
    REFUSED = 5
    """The API refused the request (4xx/5xx: invalid, unauthorised, not found, finished)."""
    UNREACHABLE = 6
    """The webhook could not be reached."""


OUTCOME = {"Succeeded": Exit.OK, "Failed": Exit.FAILED, "Cancelled": Exit.CANCELLED}


class CommandError(Exception):
    def __init__(self, code: Exit, message: str) -> None:
        self.code = code
        super().__init__(message)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def _s3_uri(text: str) -> str:
    if not text.startswith("s3://") or len(text) <= len("s3://"):
        raise argparse.ArgumentTypeError(f"not an s3:// URI: {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="exportjobs",
        description="Ask the exportjobs webhook for exports and follow them.",
        epilog="Exit codes: 0 succeeded (or done), 1 export failed, 2 usage, 3 export cancelled, "
        "4 timed out waiting, 5 refused by the API, 6 webhook unreachable.",
    )
    top.add_argument(
        "--url",
        default=os.environ.get("EXPORTJOBS_URL", ""),
        help="the webhook's base URL, e.g. http://127.0.0.1:8080 (env EXPORTJOBS_URL)",
    )
    top.add_argument(
        "--token",
        default=os.environ.get("EXPORTJOBS_TOKEN", ""),
        help="bearer token (env EXPORTJOBS_TOKEN)",
    )
    top.add_argument(
        "--request-timeout", type=_positive, default=30.0, help="seconds per HTTP request"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="ask for an export (202: its id)")
    submit.add_argument("source", type=_s3_uri, nargs="?", help="s3://bucket/key.csv")
    submit.add_argument("--dataset-id", help="a dataset UUID instead of a source URI")
    submit.add_argument("--format", "-f", required=True, choices=FORMATS)
    submit.add_argument("--destination", type=_s3_uri, help="s3://bucket/prefix/ of the output")
    submit.add_argument("--callback-url", help="where to POST the completion CloudEvent")
    submit.add_argument("--idempotency-key", default="", help="the same key = the same export")
    _wait_flags(submit, optional=True)
    submit.add_argument("--download", type=Path, metavar="FILE", help="implies --wait")

    get = commands.add_parser("get", help="one export as JSON")
    get.add_argument("id")

    listing = commands.add_parser("list", help="exports, one line each (or --json)")
    listing.add_argument("--phase", choices=PHASES)
    listing.add_argument("--source-prefix", help="only exports whose source starts with this")
    listing.add_argument("--since", help="only exports created at or after this RFC 3339 time")
    listing.add_argument("--limit", type=int, default=100, help="page size")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    wait = commands.add_parser("wait", help="wait until an export is finished")
    wait.add_argument("id")
    _wait_flags(wait, optional=False)

    cancel = commands.add_parser("cancel", help="cancel an unfinished export")
    cancel.add_argument("id")

    download = commands.add_parser("download", help="save a succeeded export's output")
    download.add_argument("id")
    download.add_argument(
        "-o", "--output", type=Path, help="file to write (default: the output's name; - = stdout)"
    )
    return top


def _wait_flags(command: argparse.ArgumentParser, *, optional: bool) -> None:
    if optional:
        command.add_argument("--wait", action="store_true", help="wait until it is finished")
    command.add_argument("--timeout", type=_positive, help="give up waiting after SECONDS")
    command.add_argument("--interval", type=_positive, default=1.0, help="seconds between polls")


def _dump(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def wait_for(
    client: Client,
    export_id: str,
    *,
    display: Display,
    timeout: float | None,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the export is finished; its last state. Raises CommandError on timeout."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        export = client.get(export_id)
        display.show(export)
        if export.get("status") in FINAL:
            return export
        if deadline is not None and clock() >= deadline:
            raise CommandError(Exit.TIMEOUT, f"{export_id}: still {export.get('status')}")
        sleep(interval)


def _download(client: Client, export: dict[str, Any], target: Path | None, out: TextIO) -> None:
    result = export.get("result") or {}
    url = result.get("download_url")
    if export.get("status") != "Succeeded" or not url:
        raise CommandError(
            OUTCOME.get(str(export.get("status")), Exit.REFUSED),
            f"{export.get('id')}: {export.get('status')}, nothing to download",
        )
    if target is not None and str(target) == "-":
        client.download(url, sys.stdout.buffer)
        return
    path = target or Path(str(result.get("uri", "export")).rsplit("/", 1)[-1] or "export")
    size = write_atomically(path, lambda f: client.download(url, f))
    out.write(f"wrote {path} ({size:,} bytes)\n")


def _wait(client: Client, export_id: str, args: argparse.Namespace, err: TextIO) -> dict[str, Any]:
    display = Display(err, tty=err.isatty())
    return wait_for(
        client, export_id, display=display, timeout=args.timeout, interval=args.interval
    )


def run(args: argparse.Namespace, client: Client, out: TextIO, err: TextIO) -> Exit:
    if args.command == "submit":
        if bool(args.source) == bool(args.dataset_id):
            raise CommandError(Exit.USAGE, "give a source s3:// URI or --dataset-id, not both")
        given = {"source": args.source, "dataset_id": args.dataset_id}
        given.update(destination=args.destination, callback_url=args.callback_url)
        request = {"format": args.format, **{k: v for k, v in given.items() if v}}
        accepted = client.submit(request, idempotency_key=args.idempotency_key)
        export_id = str(accepted["id"])
        out.write(export_id + "\n")
        out.flush()
        if not (args.wait or args.download):
            return Exit.OK
        export = _wait(client, export_id, args, err)
        if args.download and export.get("status") == "Succeeded":
            _download(client, export, args.download, err)
        return OUTCOME[str(export["status"])]
    if args.command == "get":
        _dump(client.get(args.id), out)
        return Exit.OK
    if args.command == "list":
        filters = {"phase": args.phase, "source_prefix": args.source_prefix}
        filters.update(created_since=args.since)
        query = {"limit": str(args.limit), **{k: v for k, v in filters.items() if v}}
        for item in client.pages(query):
            if args.json:
                out.write(json.dumps(item, sort_keys=True) + "\n")
            else:
                out.write(f"{item.get('id', '')}  {item.get('format') or '':<8} {describe(item)}\n")
        return Exit.OK
    if args.command == "wait":
        return OUTCOME[str(_wait(client, args.id, args, err)["status"])]
    if args.command == "cancel":
        answer = client.cancel(args.id)
        out.write(f"{args.id}: cancel requested ({answer.get('status', '')})\n")
        return Exit.OK
    if args.command == "download":
        _download(client, client.get(args.id), args.output, err)
        return Exit.OK
    raise CommandError(Exit.USAGE, f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.url:
        sys.stderr.write("exportjobs: no webhook URL: --url or EXPORTJOBS_URL\n")
        return Exit.USAGE
    client = Client(args.url, args.token, timeout=args.request_timeout)
    try:
        return run(args, client, sys.stdout, sys.stderr)
    except CommandError as error:
        sys.stderr.write(f"exportjobs: {error}\n")
        return error.code
    except ApiError as error:
        sys.stderr.write(f"exportjobs: {error}\n")
        return Exit.REFUSED
    except ConnectError as error:
        sys.stderr.write(f"exportjobs: cannot reach the webhook: {error}\n")
        return Exit.UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
