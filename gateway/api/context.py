"""What the gateway knows about the request being served, for the audit record.

The request middleware sets it; :func:`recorder` adds it to every ledger entry written
while the request is served, so domain services need not pass request ids around.
"""

from __future__ import annotations

import contextvars
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audit import Ledger

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    client: str
    method: str
    path: str


current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "sbx_request", default=None
)


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a sane one, else a fresh one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(12)


def recorder(ledger: Ledger) -> Callable[[dict[str, Any]], None]:
    """A record function for services: appends durably, with the request's context."""

    def record(fields: dict[str, Any]) -> None:
        context = current.get()
        if context is not None:
            detail = dict(fields.get("detail") or {})
            detail["request"] = {
                "client": context.client,
                "id": context.request_id,
                "method": context.method,
                "path": context.path,
            }
            fields = {**fields, "detail": detail}
        ledger.append(**fields)

    return record
