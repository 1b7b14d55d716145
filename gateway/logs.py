"""Structured logs: one JSON object per line on standard error.

Request lines carry the request id (the same one the audit ledger records), method, path,
status, duration and the signed-in user's id. Nothing that could be a secret is logged:
no headers, no cookies, no query strings, no bodies. The audit ledger, not the log, is
the record of who did what; logs are for operating the service.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes a log call may add with ``extra=`` that the JSON line carries.
FIELDS = ("request_id", "method", "path", "status", "ms", "user", "client")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
