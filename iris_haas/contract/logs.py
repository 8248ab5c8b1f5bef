"""Logging for the daemons (``iris serve``, ``iris agent run``): lines for a person, or one JSON
object per line for a log pipeline (journald, Loki, Elasticsearch), chosen by ``--log-format``.

The JSON records carry ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the exception
text when there is one, and whatever a caller passed in ``extra=`` — one field each, never folded
into the message, so a pipeline can filter on them.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import StrEnum

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# what every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and k not in out:
                out[k] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: LogFormat = LogFormat.TEXT, level: int = logging.INFO) -> None:
    """Route every logger (uvicorn's too, when it is run with ``log_config=None``) to stderr in ``fmt``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
