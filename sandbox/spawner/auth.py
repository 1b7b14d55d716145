"""``GatewayAuthenticator``: the hub admits only whom the gateway vouches for.

The hub has no login form. A user reaches it from the console's "Open sandbox" button,
which sends the browser to ``/hub/sbx-login?ticket=…`` with a one-minute ticket signed by
the gateway (:mod:`sandbox.spawner.ticket`). The ticket is accepted once; the user is
signed in to the hub under their gateway user name and sent on to start (or reach) the
named server of the ticket's grant. Anyone else is sent to the console.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Unicode, default

from sandbox.spawner.kernels import ROUTES as KERNEL_ROUTES
from sandbox.spawner.ticket import TicketRefused, verify_ticket


class TicketLoginHandler(BaseHandler):  # type: ignore[misc]
    """``GET /hub/sbx-login?ticket=…``: sign in with a gateway ticket, then open the
    grant's sandbox."""

    async def get(self) -> None:
        authenticator: GatewayAuthenticator = self.authenticator
        ticket = self.get_argument("ticket", "")
        if not ticket:
            self.redirect(authenticator.console_url)
            return
        user = await self.login_user({"ticket": ticket})
        if user is None:
            raise web.HTTPError(403, authenticator.last_refusal(ticket))
        grant = authenticator.grant_of(ticket)
        self.redirect(url_path_join(self.hub.base_url, "spawn", user.escaped_name, grant))


class GatewayAuthenticator(Authenticator):  # type: ignore[misc]
    sso_secret_file = Unicode(
        help="File holding the secret shared with the gateway, in hex (hub-sso.secret)."
    ).tag(config=True)
    console_url = Unicode(
        "http://127.0.0.1:8000/grants",
        help="The gateway page where users open sandboxes; the hub sends strangers there.",
    ).tag(config=True)

    @default("auto_login")
    def _auto_login(self) -> bool:
        return True

    @default("allow_all")
    def _allow_all(self) -> bool:
        return True  # the gateway decides who may work on which grant

    enable_auth_state = Bool(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._used: dict[str, float] = {}
        self._refusals: dict[str, str] = {}
        self._grants: dict[str, str] = {}
        self._lock = threading.Lock()

    def login_url(self, base_url: str) -> str:
        return str(url_path_join(base_url, "sbx-login"))

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        """The hub's routes of sbx: sign-on, and the kernels of Docker sandboxes (their
        servers ask the hub, which alone holds the engine, to start them)."""
        return [("/sbx-login", TicketLoginHandler), *KERNEL_ROUTES]

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        ticket = data.get("ticket", "")
        try:
            secret = bytes.fromhex(Path(self.sso_secret_file).read_text().strip())
            found = verify_ticket(secret, ticket)
        except TicketRefused as exc:
            self._refuse(ticket, str(exc))
            return None
        now = time.time()
        with self._lock:
            self._used = {n: t for n, t in self._used.items() if t > now}
            if found.nonce in self._used:
                self._refusals[ticket] = "this sign-on ticket was used already"
                return None
            self._used[found.nonce] = found.expires
            self._grants[ticket] = found.grant
        return {"name": found.user}

    def grant_of(self, ticket: str) -> str:
        with self._lock:
            return self._grants.pop(ticket, "")

    def last_refusal(self, ticket: str) -> str:
        with self._lock:
            return self._refusals.pop(ticket, "sign-on refused")

    def _refuse(self, ticket: str, reason: str) -> None:
        with self._lock:
            if len(self._refusals) > 1000:
                self._refusals.clear()
            self._refusals[ticket] = reason
