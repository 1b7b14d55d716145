"""Driving the console over HTTP in tests: sign in, change the one-time password, read
the ledger."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx2 import Response

from audit.entry import parse
from gateway.api import create_app, open_services
from gateway.api.deps import Services
from gateway.settings import load_settings

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
