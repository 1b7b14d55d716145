"""What console pages declare: the permission they need (like the API's ``Requires``),
answered the way a browser needs it.

- not signed in: a redirect to the sign-in page, which comes back afterwards;
- a one-time password not yet changed: a redirect to the password page;
- a state-changing request (POST) without the session's CSRF token, or a permission the
  roles do not give: a 403 page with the reason. Both are recorded in the audit ledger,
  like every refusal of the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request, status

from gateway.api.deps import (
    SAFE_METHODS,
    Declaration,
    Services,
    ServicesDep,
    browser_session,
    record_forbidden,
)
from gateway.identity.model import Account
from gateway.identity.sessions import ActiveSession

CSRF_FIELD = "csrf_token"


class PageRefused(Exception):
    """Answered by the console with a page (403) or a redirect (sign-in, password)."""

    def __init__(self, code: int, reason: str, *, location: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.location = code, reason, location


@dataclass(frozen=True)
class Viewer:
    """The person looking at a page, and their session (for its CSRF token)."""

    account: Account
    session: ActiveSession


class Page(Declaration):
    """``Depends(Page("organization", "read"))``: a console page and the permission it
    needs; ``Page(None, None)`` a page for anyone signed in (the home page, which tells a
    user without roles whom to ask). ``password_change_pending_ok`` lets a user whose
    password is a one-time one reach the page (the password page itself, signing out)."""

    def __init__(
        self, obj: str | None, act: str | None, *, password_change_pending_ok: bool = False
    ) -> None:
        self.obj, self.act = obj, act
        self.pending_ok = password_change_pending_ok

    async def __call__(self, found: ServicesDep, request: Request) -> Viewer:
        active = browser_session(found, request)
        if active is None:
            raise PageRefused(
                status.HTTP_303_SEE_OTHER,
                "sign in first",
                location=f"/login?next={quote(local_path(request), safe='/')}",
            )
        account = active.account
        # Who may, before the body is read: a refused upload is never parsed or spooled.
        if self.obj is not None and self.act is not None:
            reason = found.authorizer.refusal_before_target(account.actor(), self.obj, self.act)
            if reason is not None:
                self._refuse(found, account, reason)
        if request.method not in SAFE_METHODS:
            form = await request.form()
            presented = form.get(CSRF_FIELD)
            if not active.csrf_matches(presented if isinstance(presented, str) else None):
                self._refuse(found, account, "the CSRF token is missing or wrong")
        if account.must_change_password and not self.pending_ok:
            raise PageRefused(
                status.HTTP_303_SEE_OTHER, "change the password", location="/account/password"
            )
        return Viewer(account, active)

    def _refuse(self, found: Services, account: Account, reason: str) -> None:
        action = f"{self.obj}:{self.act}" if self.obj else "page:use"
        record_forbidden(found, account, action, reason)
        raise PageRefused(status.HTTP_403_FORBIDDEN, reason)


def local_path(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def safe_next(candidate: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if (
        not candidate
        or not candidate.startswith("/")
        or candidate.startswith("//")
        or "\\" in candidate
        or any(ord(c) < 0x20 for c in candidate)
    ):
        return "/"
    return candidate
