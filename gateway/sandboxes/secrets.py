"""The secrets the gateway shares with the hub, kept in the data directory:

- ``hub-service.token``: the hub's bearer token to the gateway's sandbox routes;
- ``hub-api.token``: the gateway's token to the hub's REST API (to stop servers);
- ``hub-sso.secret``: the HMAC key of sign-on tickets (:mod:`sandbox.spawner.ticket`).

Each is made on first use, owner-only (0600), with ``O_EXCL``: when two processes start
at once, one writes the file and both read what it wrote.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SERVICE_TOKEN = "hub-service.token"  # noqa: S105 - a file name
HUB_API_TOKEN = "hub-api.token"  # noqa: S105 - a file name
SSO_SECRET = "hub-sso.secret"  # noqa: S105 - a file name
_WAIT = 5.0  # seconds to wait for another process to finish writing a secret


@dataclass(frozen=True, repr=False)
class SandboxSecrets:
    service_token: str
    hub_api_token: str
    sso_secret: bytes

    def __repr__(self) -> str:  # never shown, not even in a traceback
        return "SandboxSecrets(…)"

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SandboxSecrets:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(
            service_token=_secret(data_dir / SERVICE_TOKEN, lambda: secrets.token_urlsafe(32)),
            hub_api_token=_secret(data_dir / HUB_API_TOKEN, lambda: secrets.token_hex(32)),
            sso_secret=bytes.fromhex(_secret(data_dir / SSO_SECRET, lambda: secrets.token_hex(32))),
        )


def _secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in ``path``, written first if there is none."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    value = make()
    with os.fdopen(descriptor, "w") as out:
        out.write(value + "\n")
        out.flush()
        os.fsync(out.fileno())
    return value


def _read(path: Path) -> str:
    """The secret another process wrote (or is writing: it may be empty for a moment)."""
    deadline = time.monotonic() + _WAIT
    while True:
        value = path.read_text().strip()
        if value:
            return value
        if time.monotonic() > deadline:
            raise OSError(f"{path} is empty; remove it to have a new secret made")
        time.sleep(0.01)
