"""Structured logs: one JSON object per line on standard error.

Request lines carry the request id (the same one the audit ledger records), method, path,
status, duration and the signed-in user's id. Nothing that could be a secret is logged:
no headers, no cookies, no query strings, no bodies. The audit ledger, not the log, is
the record of who did what; logs are for operating the service.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# Where a log call was made from is not part of a JSON line; without this, every call
# walks the stack to find out (the logging HOWTO's "Optimization" section).
logging._srcfile = None

# Attributes a log call may add with ``extra=`` that the JSON line carries.
FIELDS = ("request_id", "method", "path", "status", "ms", "user", "client")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _utc(created: float) -> str:
    """``2026-11-25T21:50:00.123+00:00``: ISO 8601 in UTC, to the millisecond."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created * 1000) % 1000:03d}+00:00"


def log_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` (also uvicorn's ``log_config``): JSON lines for
    the gateway and the server; uvicorn's own access log is off (the gateway logs each
    request itself, with its request id)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            "sbx": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
