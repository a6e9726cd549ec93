"""JSON log lines, one format for the webhook and the operator.

The webhook's request-id middleware sets `request_id` (a context variable), so every log record
made while serving a request, by any module, carries it without passing it around.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "exportjobs_request_id", default=None
)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def _install_record_factory() -> None:
    """Stamp the current request id on every record when it is made, in the request's context
    (formatting may happen later or elsewhere, where the context variable is unset)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "exportjobs_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    factory.exportjobs_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            line["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(*, level: str) -> None:
    """Send every logger's records as JSON lines to stderr, in place of plain stream handlers
    (basicConfig's, an earlier call's); other handlers (a test's log capture) stay."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    root.handlers.append(handler)
    root.setLevel(level)
