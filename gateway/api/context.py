"""What the gateway knows about the request being served, for the audit record.

:class:`RequestContextMiddleware` sets it; :class:`LedgerSink` adds it to every ledger entry
written while the request is served, so domain services need not pass request ids
around. The middleware also answers with the request id and the security headers, and
logs one JSON line per request (see :mod:`gateway.logs`).
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit import Ledger

log = logging.getLogger("sbx.gateway")

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


class LedgerSink:
    """Where the gateway's audit entries go (an :class:`~gateway.db.writes.AuditSink`): the
    ledger, each entry with the context of the request it was recorded in, so domain
    services need not pass request ids around."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]:
        context = current.get()
        if context is None:
            return fields
        detail = dict(fields.get("detail") or {})
        detail["request"] = {
            "client": context.client,
            "id": context.request_id,
            "method": context.method,
            "path": context.path,
        }
        return {**fields, "detail": detail}

    def append(self, fields: dict[str, Any]) -> None:
        self.ledger.append(**fields)

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        self.ledger.append_many(entries)

    def __call__(self, fields: dict[str, Any]) -> None:
        """Record one entry now, durably."""
        self.append(self.prepare(fields))


class RequestContextMiddleware:
    """Plain ASGI (no extra task per request, unlike ``@app.middleware``): sets the request
    context, adds ``X-Request-ID`` and ``headers`` (``exceptions`` replaces them for the
    paths it names) to the response, and logs the request when it is answered. The user is
    the one the authentication dependency left in ``scope["state"]["user"]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Mapping[str, str],
        exceptions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.exceptions = {
            path: [(k.lower().encode(), v.encode()) for k, v in special.items()]
            for path, special in (exceptions or {}).items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or [])
        supplied = incoming.get(b"x-request-id")
        request_id = request_id_from(supplied.decode("latin-1") if supplied else None)
        client = scope["client"][0] if scope.get("client") else ""
        method, path = scope["method"], scope["path"]
        extra = [(b"x-request-id", request_id.encode()), *self.exceptions.get(path, self.headers)]
        answered: list[int] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        token = current.set(RequestContext(request_id, client, method, path))
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current.reset(token)
            status = answered[0] if answered else 500
            log.info(
                "%s %s %d",
                method,
                path,
                status,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    "user": scope.get("state", {}).get("user"),
                    "client": client,
                },
            )
