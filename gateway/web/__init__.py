"""The web console: server-rendered pages (Jinja2) in zh-CN (the default) and en.

Pages are thin shells over the same domain services as the API, and declare the
permission they need the same way (:class:`~gateway.web.deps.Page`). No JavaScript is
needed: forms post, the server redirects. Every form that changes state carries the
session's CSRF token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.web.deps import PageRefused
from gateway.web.i18n import N_
from gateway.web.pages import ROUTERS, exports, reports
from gateway.web.render import render

STATIC = Path(__file__).resolve().parent / "static"


def mount(app: FastAPI, *, api_prefix: str) -> None:
    """Add the console's pages, its stylesheet and its refusal pages to ``app`` (whose
    JSON API under ``api_prefix`` keeps answering in JSON)."""
    for router in (*ROUTERS, exports.router, reports.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith(api_prefix):
            return await request_validation_exception_handler(request, exc)
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
            for error in exc.errors()
        )
        return problem_page(
            request, N_("The request is not valid"), reasons, status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    @app.exception_handler(PageRefused)
    async def refused(request: Request, exc: PageRefused) -> Response:
        if exc.location is not None:
            return RedirectResponse(exc.location, status_code=status.HTTP_303_SEE_OTHER)
        return render(request, "refused.html", reason=exc.reason, status_code=exc.code)


def problem_page(request: Request, heading: str, reason: str, status_code: int) -> Response:
    """A console page that says what went wrong (``heading`` is a catalogue message)."""
    return render(request, "problem.html", heading=heading, reason=reason, status_code=status_code)


LEDGER_DOWN = N_("The audit ledger is unavailable")
