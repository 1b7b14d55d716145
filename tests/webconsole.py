"""Driving the console over HTTP in tests: serve it, sign in, change the one-time
password, read the ledger."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient
from httpx2 import Response

from audit.entry import parse
from gateway.api import create_app, open_services
from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.db.models import OrganizationType
from gateway.identity.model import Account
from gateway.settings import load_settings
from tests.integration.test_serve import free_port


@contextmanager
def served(app: Any, **options: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread of this process on a free port, until the
    block ends: its base URL (https when ``options`` give ``ssl_certfile``)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.02)
        scheme = "https" if "ssl_certfile" in options else "http"
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


NEW_PASSWORD = "correct-horse-battery"  # noqa: S105 - a test password


@dataclass
class Console:
    client: TestClient
    found: Services
    admin_password: str

    def entries(self) -> list[dict[str, Any]]:
        return [parse(line) for _, line in self.found.ledger.entries(0)]

    def sign_in(self, username: str, password: str, **extra: str) -> Response:
        token = form_token(self.client.get("/login"))
        data = {"username": username, "password": password, "csrf_token": token, **extra}
        return self.client.post("/login", data=data)

    def sign_in_admin(self) -> Response:
        """First sign-in with the one-time password, the forced change, and sign-in again."""
        changed = self.change_password(self.sign_in("admin", self.admin_password))
        assert "notice" in changed.text
        return self.sign_in("admin", NEW_PASSWORD)

    def change_password(self, page: Response, current: str | None = None) -> Response:
        assert page.url.path == "/account/password", page.url
        return self.client.post(
            "/account/password",
            data={
                "current": current or self.admin_password,
                "new": NEW_PASSWORD,
                "repeat": NEW_PASSWORD,
                "csrf_token": form_token(page),
            },
        )


def form_token(page: Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def session_cookie(client: TestClient) -> str:
    return client.cookies["__Host-sbx_session"]


def open_console(database_url: str, tmp_path: Path) -> Iterator[Console]:
    """A console on a fresh data directory, with its first administrator."""
    settings = load_settings(data_dir=tmp_path / "var", database_url=database_url)
    found = open_services(settings)
    made = found.identity.bootstrap_admin(operator_name="运营", credit_code="91370200MA3C0Q0X12")
    assert made is not None
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        yield Console(client, found, made[1])
    found.close()


# An organization to make: its key in the test, its type, its name, a serial for its code.
OrganizationSpec = tuple[str, OrganizationType, str, int]


@dataclass
class Staffed:
    """The platform's administrator, the organizations (key → id, ``operator`` included)
    and the people (user name → account), each person with :data:`NEW_PASSWORD`."""

    admin: Actor
    admin_password: str
    organizations: dict[str, str]
    accounts: dict[str, Account]


def staff(
    found: Services,
    organizations: list[OrganizationSpec],
    people: dict[str, tuple[str, tuple[str, ...]]],
    credit_code: Any,
) -> Staffed:
    """Bootstrap the operator's administrator, then the organizations and the people
    (user name → organization key and roles)."""
    identity = found.identity
    made = identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
    assert made is not None
    admin = made[0].actor()
    keys = {"operator": made[0].organization_id}
    for key, kind, name, serial in organizations:
        keys[key] = identity.create_organization(
            admin, kind=kind, name=name, credit_code=credit_code(serial)
        ).id
    accounts = {}
    for username, (organization, roles) in people.items():
        account, one_time = identity.create_user(
            admin,
            organization_id=keys[organization],
            username=username,
            display_name=f"{username} 王",
            roles=roles,
        )
        identity.set_password(account.id, one_time, NEW_PASSWORD)
        accounts[username] = account
    return Staffed(admin, made[1], keys, accounts)


@dataclass
class Desk:
    """The console and its people, for tests that sign in as one after the other."""

    console: Console
    accounts: dict[str, Account]

    @property
    def client(self) -> TestClient:
        return self.console.client

    def sign_in(self, username: str) -> str:
        """Sign in as ``username`` (in place of whoever was); the session's CSRF token."""
        self.client.cookies.delete("__Host-sbx_session")
        home = self.console.sign_in(username, NEW_PASSWORD)
        assert home.status_code == 200 and home.url.path == "/", home.text
        return form_token(home)

    def actions(self) -> list[tuple[str, str]]:
        return [(entry["action"], entry["outcome"]) for entry in self.console.entries()]
