"""Request logs are JSON lines with the request id and the user, and carry no secrets."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app, open_services
from gateway.logs import JsonFormatter, log_config
from gateway.settings import load_settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    logging.config.dictConfig(log_config())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sbx")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_request_lines_are_json_with_ids_and_without_secrets(
    captured: io.StringIO, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "var")
    found = open_services(settings)
    made = found.identity.bootstrap_admin(operator_name="运营", credit_code="91370200MA3C0Q0X12")
    assert made is not None
    account, password = made
    _, token = found.identity.issue_token(account.actor(), name="logs")
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        me = client.get(
            f"/api/v1/me?token={token}",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-logs-0001"},
        )
        assert me.status_code == 200
        login = client.get("/login")
        client.post(
            "/login",
            data={
                "username": "admin",
                "password": password,
                "csrf_token": client.cookies["sbx_login_csrf"],
            },
        )
        cookie = client.cookies["__Host-sbx_session"]
    found.close()
    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    requests = [line for line in lines if "request_id" in line]
    assert len(requests) >= 4 and login.status_code == 200
    first = requests[0]
    assert first["request_id"] == "req-logs-0001" and first["path"] == "/api/v1/me"
    assert first["status"] == 200 and first["user"] == account.id and first["ms"] >= 0
    logged = datetime.fromisoformat(first["time"])  # ISO 8601, UTC, to the millisecond
    assert logged.utcoffset() == timedelta(0) and len(first["time"]) == 29
    assert abs(datetime.now(UTC) - logged) < timedelta(minutes=5)
    assert any(
        line.get("user") == account.id and line["path"] == "/account/password" for line in requests
    )
    for secret in (token, password, cookie):
        assert secret not in text
