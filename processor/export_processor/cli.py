"""`exportjobs-processor`: convert one CSV export; configured by env (in a Job) or by flags.

Prints the result JSON on stdout and writes it to the termination message; on failure writes
`{"error": {...}}` there, one line on stderr, and exits 2 (bad input), 3 (source missing) or
1 (retryable).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from export_processor import split_cli, termination
from export_processor.common import ExitCode, add_version_argument
from export_processor.errors import (
    CancelledError,
    ExportError,
    InvalidConfigError,
    TransientError,
)
from export_processor.progress import ProgressReporter, ProgressState, progress_body
from export_processor.s3client import new_s3_client
from export_processor.settings import FORMATS, ProcessorSettings

DEFAULT_MESSAGE_PATH = Path("/dev/termination-log")

if TYPE_CHECKING:
    from export_processor.convert import Exporter

ENV_HELP = """\
environment (flags win over variables):
  EXPORTJOBS_SOURCE_URI, EXPORTJOBS_SOURCE_VERSION_ID, EXPORTJOBS_SOURCE_ETAG,
  EXPORTJOBS_FORMAT, EXPORTJOBS_DESTINATION_URI, EXPORTJOBS_CSV_DELIMITER,
  EXPORTJOBS_CSV_HEADER, EXPORTJOBS_CSV_QUOTE, EXPORTJOBS_CSV_ENCODING,
  EXPORTJOBS_EXPORT_NAME, EXPORTJOBS_EXPORT_NAMESPACE, EXPORTJOBS_TERMINATION_MESSAGE_PATH,
  EXPORTJOBS_KUBE_API_URL, EXPORTJOBS_KUBE_TOKEN_FILE, EXPORTJOBS_KUBE_CA_FILE,
  EXPORTJOBS_PROGRESS_INTERVAL_SECONDS, EXPORTJOBS_COLUMN_TYPES, and tuning variables
  (docs/configuration.md); S3 credentials and endpoint from the AWS chain (AWS_ENDPOINT_URL).

exit codes: 0 done, 2 bad input or settings, 3 source missing, 1 anything retryable.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportjobs-processor",
        description="Stream a CSV from S3 (or a file) and write it as csv, csv.gz, jsonl or "
        "parquet under the destination prefix.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_argument(parser, program="exportjobs-processor", extra="processor")
    parser.add_argument("--source", help="s3://bucket/key or file:///path of the input CSV")
    parser.add_argument("--source-version-id", help="read this S3 object version")
    parser.add_argument("--source-etag", help="fail (exit 3) unless the object has this ETag")
    parser.add_argument("--format", choices=FORMATS, help="output format")
    parser.add_argument("--destination", help="s3://bucket/prefix/ or file:///dir/")
    parser.add_argument("--delimiter", help="CSV delimiter, one character (\\t for tab)")
    parser.add_argument("--no-header", action="store_true", help="the CSV has no header row")
    parser.add_argument("--quote", help="CSV quote character")
    parser.add_argument("--encoding", help="input text encoding (default utf-8)")
    parser.add_argument("--export-name", help="ExportJob name (output key, progress)")
    parser.add_argument("--export-namespace", help="ExportJob namespace (progress)")
    parser.add_argument(
        "--column-types", choices=("auto", "string"), help="typing policy (default auto)"
    )
    parser.add_argument(
        "--termination-message-path", type=Path, help="where to write the result/error JSON"
    )
    split_cli.add_arguments(parser)
    return parser


class _Signals:
    """Turns the first SIGTERM/SIGINT into a CancelledError in the main thread."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.done = False
        """Set once the output is complete: from then on a signal changes nothing."""
        self.exporter: Exporter | None = None
        self.after_done = threading.Event()
        """Set by a signal that came once the output was complete."""
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                signum: signal.signal(signum, self._handle)
                for signum in (signal.SIGTERM, signal.SIGINT)
            }

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None or self.done:
            # Already stopping (let the abort finish), or the output is complete: a cancel that
            # comes after it exits 0 with the result, so the output never goes unrecorded (and
            # without waiting any longer for the API server to take the last progress).
            self.after_done.set()
            return
        self.received = signum
        if self.exporter is not None:
            self.exporter.cancel()
        raise CancelledError(f"stopped by signal {signal.Signals(signum).name}")


def _settings(args: argparse.Namespace) -> ProcessorSettings:
    flags = {
        "source_uri": args.source,
        "source_version_id": args.source_version_id,
        "source_etag": args.source_etag,
        "export_format": args.format,
        "destination_uri": args.destination,
        "csv_delimiter": args.delimiter,
        "csv_header": False if args.no_header else None,
        "csv_quote": args.quote,
        "csv_encoding": args.encoding,
        "export_name": args.export_name,
        "export_namespace": args.export_namespace,
        "column_types": args.column_types,
        "termination_message_path": args.termination_message_path,
    }
    try:
        return ProcessorSettings.from_env(**{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise InvalidConfigError(str(exc)) from None


def _write_message(path: Path | None, payload: dict[str, Any]) -> None:
    """The termination message at `path`, else at Kubernetes' path when that exists."""
    termination.write(path or DEFAULT_MESSAGE_PATH, payload, explicit=path is not None)


def _fail(
    error: ExportError,
    settings: ProcessorSettings | None,
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
) -> int:
    payload: dict[str, Any] = {
        "error": {"code": str(error.code), "message": error.message, "retryable": error.retryable}
    }
    payload |= extra or {}
    path = settings.termination_message_path if settings else None
    if settings is None:
        # The settings failed to parse (INVALID_CONFIG): the path still comes from the flag or
        # the variable, so the reason reaches status.error.message, not only stderr.
        given = args.termination_message_path or os.environ.get(
            "EXPORTJOBS_TERMINATION_MESSAGE_PATH"
        )
        path = Path(given) if given else None
    _write_message(path, payload)
    one_line = " ".join(error.message.split())[:1000]
    print(f"exportjobs-processor: {error.code}: {one_line}", file=sys.stderr)
    return int(error.exit_code)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the processor and return the exit code."""
    args = build_parser().parse_args(argv)
    signals = _Signals()
    signals.install()
    try:
        return _run(args, signals)
    finally:
        signals.restore()


def _run(args: argparse.Namespace, signals: _Signals) -> int:
    settings: ProcessorSettings | None = None
    reporter: ProgressReporter | None = None
    exporter: Exporter | None = None
    try:
        settings = _settings(args)
        job = split_cli.split_job(args)
        client = None
        if settings.source_uri.startswith("s3://") or settings.destination_uri.startswith("s3://"):
            client = new_s3_client(
                max_attempts=settings.buffers.s3_max_attempts,
                pool_size=settings.buffers.read_ahead + settings.buffers.upload_concurrency + 2,
            )
        # The modules and the S3 client's models live until exit: out of the collector's
        # sight, the collections the export triggers stay cheap (a full one cost 64 ms).
        gc.freeze()
        progress = ProgressState()
        if job is not None and job.mode != "range":
            payload = split_cli.finish(job, settings, client)
            signals.done = True
        else:
            if job is None:
                # Imported here: the split steps that convert nothing start without pyarrow.
                from export_processor.convert import Exporter

                exporter = Exporter(settings, s3_client=client, progress=progress)
            else:
                exporter = split_cli.range_exporter(job, settings, client, progress)
            signals.exporter = exporter
            reporter = _reporter(settings, progress, job.spec.index if job and job.spec else None)
            if reporter is not None:
                reporter.start()
            result = exporter.run()
            signals.done = True
            payload = result.as_json() | _range_report(exporter)
        # The message first: the last progress patch may wait out an API server outage, and the
        # result must be there whenever the container ends.
        _write_message(settings.termination_message_path, payload)
        if reporter is not None:
            reporter.stop(final=True, interrupt=signals.after_done)
        print(json.dumps(payload, separators=(",", ":")), flush=True)
        return int(ExitCode.OK)
    except Exception as error:
        if reporter is not None:
            reporter.stop(final=False)
        if not isinstance(error, ExportError):
            internal = f"internal error: {type(error).__name__}: {error}"
            return _fail(TransientError(internal), settings, args)
        if signals.received is not None and not isinstance(error, CancelledError):
            error = CancelledError(f"stopped by signal {signals.received}: {error.message}")
        return _fail(error, settings, args, _range_report(exporter))


def _range_report(exporter: Exporter | None) -> dict[str, Any]:
    """`range` of a split export's range (its start, end and kinds; the start also on failure)."""
    report = getattr(exporter, "report", None)
    return {"range": report.as_json()} if report is not None else {}


def _reporter(
    settings: ProcessorSettings, progress: ProgressState, range_index: int | None = None
) -> ProgressReporter | None:
    kube = settings.kube
    if not (kube.api_url and settings.export_name and settings.export_namespace):
        return None

    def sample() -> dict[str, object]:
        return progress_body(
            bytes_read=progress.bytes_read,
            bytes_total=progress.bytes_total,
            rows=progress.rows,
            range_index=range_index,
        )

    return ProgressReporter(
        settings=kube,
        namespace=settings.export_namespace,
        name=settings.export_name,
        sample=sample,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    code = run(argv)
    if code != 0:
        # After a failure a thread may still be blocked in a read (a stalled S3 connection, a
        # pipe); pyarrow joins its I/O threads at interpreter exit, so exit without that wait.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
