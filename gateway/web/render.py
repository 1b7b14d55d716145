"""Rendering console pages: one Jinja2 environment per language, autoescaped."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.api.deps import Services
from gateway.web.deps import CSRF_FIELD, Viewer, local_path
from gateway.web.i18n import LOCALE_COOKIE, LOCALES, pick_locale, translations

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def environment(locale: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def locale_of(request: Request) -> str:
    return pick_locale(request.cookies.get(LOCALE_COOKIE))


def gettext_for(request: Request) -> Any:
    """``_`` for messages made in Python (flash messages, errors), in the page's language."""
    return translations(locale_of(request)).gettext


def render(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None = None,
    status_code: int = 200,
    here: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """``here`` is the page's own address, where switching the language returns to
    (default: the request's, for a GET; the home page after a POST)."""
    locale = locale_of(request)
    found: Services = request.app.state.services

    def can(obj: str, act: str) -> bool:
        """For menus: whether the viewer's roles allow it (the route checks again)."""
        return viewer is not None and found.authorizer.allows(viewer.account.actor(), obj, act)

    page = environment(locale).get_template(template)
    html = page.render(
        request=request,
        here=here or (local_path(request) if request.method == "GET" else "/"),
        locale=locale,
        locales=list(LOCALES),
        viewer=viewer,
        account=viewer.account if viewer else None,
        csrf_field=CSRF_FIELD,
        csrf_token=viewer.session.csrf_token if viewer else "",
        can=can,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
