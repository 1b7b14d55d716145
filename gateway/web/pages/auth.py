"""Signing in and out, the language switch, one's password and second factor."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import RedirectResponse, Response

from gateway.api.deps import Public, ServicesDep, browser_session
from gateway.identity.model import IdentityError, SignInFailed
from gateway.identity.sessions import second_factor_enabled
from gateway.web.deps import CSRF_FIELD, Page, Viewer, safe_next
from gateway.web.i18n import LOCALE_COOKIE, LOCALES
from gateway.web.render import gettext_for, render

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "sbx_login_csrf"
BASE32 = re.compile(r"[A-Z2-7]{16,64}")
SignedIn = Annotated[Viewer, Depends(Page(None, None))]
SignedInPending = Annotated[Viewer, Depends(Page(None, None, password_change_pending_ok=True))]


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login", dependencies=[Depends(Public())])
def login_page(request: Request, found: ServicesDep, next: str = "/") -> Response:  # noqa: A002
    if browser_session(found, request) is not None:
        return _see_other(safe_next(next))
    return _login_form(request, found, next=safe_next(next))


def _login_form(
    request: Request,
    found: ServicesDep,
    *,
    next: str,  # noqa: A002
    error: str | None = None,
    notice: str | None = None,
    username: str = "",
    status_code: int = 200,
) -> Response:
    # Login CSRF: the form carries a value that must equal a cookie only this site sets.
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        login_token=token,
        next=next,
        error=error,
        notice=notice,
        username=username,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=found.web.secure_cookies,
        path="/login",
    )
    return response


@router.post("/login", dependencies=[Depends(Public())])
def login(
    request: Request,
    found: ServicesDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    totp: Annotated[str, Form(max_length=12)] = "",
    login_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=64)] = "",
    next: Annotated[str, Form(max_length=512)] = "/",  # noqa: A002
) -> Response:
    _ = gettext_for(request)
    target = safe_next(next)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected.encode(), login_token.encode()):
        return _login_form(
            request,
            found,
            next=target,
            error=_("The sign-in form expired. Please try again."),
            username=username,
            status_code=status.HTTP_403_FORBIDDEN,
        )
    client = request.client.host if request.client else ""
    previous = browser_session(found, request)
    if previous is not None:  # a new sign-in never continues an old session
        found.browser_sessions.sign_out(previous, reason="signed in again")
    try:
        signed_in = found.browser_sessions.sign_in(
            username, password, totp=totp or None, client=client
        )
    except SignInFailed:
        return _login_form(
            request,
            found,
            next=target,
            error=_(
                "The user name, password or authenticator code is wrong, or the account is locked."
            ),
            username=username,
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    account = signed_in.account
    response = _see_other("/account/password" if account.must_change_password else target)
    response.set_cookie(
        found.session_cookie,
        signed_in.secret,
        max_age=int(found.web.lifetime.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=found.web.secure_cookies,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, found: ServicesDep, viewer: SignedInPending) -> Response:
    found.browser_sessions.sign_out(viewer.session)
    response = _see_other("/login")
    response.delete_cookie(found.session_cookie, path="/")
    return response


@router.get("/lang/{locale}", dependencies=[Depends(Public())])
def switch_language(locale: str, next: str = "/") -> Response:  # noqa: A002
    """Remember the console language (a preference, not a state change of the platform)."""
    response = _see_other(safe_next(next))
    if locale in LOCALES:
        response.set_cookie(
            LOCALE_COOKIE, locale, max_age=365 * 24 * 3600, samesite="lax", path="/"
        )
    return response


@router.get("/account/password")
def password_page(request: Request, viewer: SignedInPending) -> Response:
    return render(request, "password.html", viewer=viewer, error=None)


@router.post("/account/password")
def change_password(
    request: Request,
    found: ServicesDep,
    viewer: SignedInPending,
    current: Annotated[str, Form(max_length=256)] = "",
    new: Annotated[str, Form(max_length=256)] = "",
    repeat: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    _ = gettext_for(request)
    if new != repeat:
        error = _("The two new passwords differ.")
    else:
        try:
            found.identity.set_password(viewer.account.id, current, new)
        except IdentityError as exc:
            error = str(exc)
        else:
            # Every session of the user ends, this one included: sign in with the new one.
            found.browser_sessions.end_all(viewer.account.id, reason="password changed")
            response = _login_form(
                request,
                found,
                next="/",
                notice=_("Your password was changed. Please sign in with the new one."),
                username=viewer.account.username,
            )
            response.delete_cookie(found.session_cookie, path="/")
            return response
    return render(
        request,
        "password.html",
        viewer=viewer,
        error=error,
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


@router.get("/account/security")
def security_page(request: Request, found: ServicesDep, viewer: SignedIn) -> Response:
    return _security_form(request, found, viewer)


def _security_form(
    request: Request,
    found: ServicesDep,
    viewer: Viewer,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    enabled = second_factor_enabled(found.sessions, viewer.account.id)
    secret = uri = qr = ""
    if not enabled:
        secret = found.identity.new_totp_secret()
        uri = found.identity.totp_uri(secret, viewer.account.username)
        svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#111", light="#fff")
        qr = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    return render(
        request,
        "security.html",
        viewer=viewer,
        enabled=enabled,
        secret=secret,
        uri=uri,
        qr=qr,
        error=error,
        notice=notice,
        status_code=status_code,
    )


@router.post("/account/security")
def enable_second_factor(
    request: Request,
    found: ServicesDep,
    viewer: SignedIn,
    secret: Annotated[str, Form(max_length=64)] = "",
    code: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    _ = gettext_for(request)
    try:
        if not BASE32.fullmatch(secret):
            raise IdentityError("not a TOTP secret")
        found.identity.enable_totp(viewer.account.id, secret, code)
    except IdentityError:
        return _security_form(
            request,
            found,
            viewer,
            error=_("That code does not match. Check the authenticator's clock and try again."),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return _security_form(
        request,
        found,
        viewer,
        notice=_("The second factor is on. Sign-in now asks for a code."),
    )
