"""Sign-on tickets: how the gateway vouches for a user to the hub.

When a signed-in user opens a sandbox, the gateway mints a ticket — who, for which grant,
until when (a minute), a random nonce — and sends the browser to the hub with it. The hub
accepts a ticket once, only before it expires and only with a valid HMAC-SHA256 under the
secret both share (``hub-sso.secret`` in the data directory). Nobody reaches the hub
without one: it has no login form of its own.

Format: ``base64url(json payload) "." base64url(hmac)``; the payload is
``{"sub": user, "grant": grant, "exp": unix seconds, "nonce": hex}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

LIFETIME = 60  # seconds
MAX_TICKET = 2048
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
GRANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: no trailing newline either


class TicketRefused(Exception):
    """A ticket that does not admit anyone; the message says why (safe to show)."""


@dataclass(frozen=True)
class Ticket:
    user: str
    grant: str
    expires: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_ticket(
    secret: bytes, user: str, grant: str, *, now: float | None = None, lifetime: int = LIFETIME
) -> str:
    if not USERNAME.match(user) or not GRANT.match(grant):
        raise TicketRefused("the user or grant name is not valid for a sandbox")
    issued = int(time.time() if now is None else now)
    payload = {
        "sub": user,
        "grant": grant,
        "exp": issued + lifetime,
        "nonce": secrets.token_hex(16),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signature = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def verify_ticket(secret: bytes, ticket: str, *, now: float | None = None) -> Ticket:
    """The ticket's content if it is authentic and unexpired (one-time use is the caller's:
    remember the nonce until the ticket expires)."""
    if not ticket or len(ticket) > MAX_TICKET or ticket.count(".") != 1:
        raise TicketRefused("malformed sign-on ticket")
    body, signature = ticket.split(".")
    expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(signature)
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        raise TicketRefused("malformed sign-on ticket") from None
    if not hmac.compare_digest(expected, given):
        raise TicketRefused("the sign-on ticket was not issued by this platform")
    try:
        found = Ticket(
            str(payload["sub"]), str(payload["grant"]), int(payload["exp"]), str(payload["nonce"])
        )
    except (KeyError, TypeError, ValueError):
        raise TicketRefused("malformed sign-on ticket") from None
    if (time.time() if now is None else now) > found.expires:
        raise TicketRefused("the sign-on ticket has expired; open the sandbox again")
    if not USERNAME.match(found.user) or not GRANT.match(found.grant):
        raise TicketRefused("malformed sign-on ticket")
    return found
