"""The HTTP API: every route declares its permission, requests are recorded with their
request id and client, refusals are 401/403 with a reason and recorded too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit import Ledger
from audit.entry import parse
from gateway.api import context, create_app
from gateway.api.deps import Declaration, Services, path_operations
from gateway.authz import Actor, Authorizer
from gateway.db import make_engine, migrate, session_factory
from gateway.db.models import User
from gateway.identity.model import Account
from gateway.identity.service import IdentityService
from gateway.settings import load_settings
from sandbox.identifiers.credit_code import check_character


def credit_code(serial: int) -> str:
    head = f"91370200MA{serial:07d}"
    return head + check_character(head)


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Services, str]]:
    settings = load_settings(data_dir=tmp_path / "var", database_url=database_url)
    engine = make_engine(settings.database)
    migrate(engine)
    ledger = Ledger(settings.ledger_dir)
    record = context.LedgerSink(ledger)
    authorizer = Authorizer(settings.policies_dir, record)
    sessions = session_factory(engine)
    identity = IdentityService(
        sessions, authorizer, record, hasher=PasswordHasher(time_cost=1, memory_cost=8192)
    )
    found = Services(sessions=sessions, ledger=ledger, authorizer=authorizer, identity=identity)
    made = identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
    assert made is not None
    _, token = identity.issue_token(made[0].actor(), name="tests")
    with TestClient(create_app(settings, found)) as client:
        yield client, found, token
    ledger.close()
    engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def entries(found: Services) -> list[dict[str, Any]]:
    return [parse(line) for _, line in found.ledger.entries(1)]


def test_every_route_declares_who_may_call_it() -> None:
    app = create_app(load_settings())
    routes = list(path_operations(app.routes))
    undeclared = []
    for route in routes:
        calls = [dependency.call for dependency in route.dependant.dependencies]
        calls += [d.call for sub in route.dependant.dependencies for d in sub.dependencies]
        if not any(isinstance(call, Declaration) for call in calls):
            undeclared.append(f"{sorted(route.methods)} {route.path}")
    assert undeclared == []
    operations = sum(len(item) for item in app.openapi()["paths"].values())
    documented = [route for route in routes if route.include_in_schema]
    assert len(documented) == operations >= 5  # the walk saw every operation the API has
    pages = {route.path for route in routes if not route.include_in_schema}
    assert {"/", "/login", "/logout"} <= pages  # ...and the console's pages
    document = app.openapi()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert document["paths"]["/api/v1/me"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in document["paths"]["/api/v1/health"]["get"]


def test_the_declaration_check_finds_an_undeclared_route() -> None:
    from fastapi import APIRouter, FastAPI

    router = APIRouter()

    @router.get("/open")
    def open_route() -> None:
        return None

    app = FastAPI()
    app.include_router(router, prefix="/x")
    routes = list(path_operations(app.routes))
    assert [route.path for route in routes] == ["/open"]
    assert not any(isinstance(d.call, Declaration) for d in routes[0].dependant.dependencies)


def test_health_and_readiness_need_no_sign_in(api: Any) -> None:
    client, _, _ = api
    assert client.get("/api/v1/health").json() == {"status": "ok"}
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "ledger": "ok"}


def test_a_state_change_is_recorded_with_its_request_id_and_client(api: Any) -> None:
    client, found, token = api
    response = client.post(
        "/api/v1/organizations",
        json={"type": "provider", "name": "青岛水务", "credit_code": credit_code(2)},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-0000001"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["X-Request-ID"] == "req-0000001"
    created = response.json()
    assert created["name"] == "青岛水务"
    entry = next(e for e in entries(found) if e["action"] == "organization.create")
    assert entry["object"] == f"org:{created['id']}"
    assert entry["detail"]["request"] == {
        "client": "testclient",
        "id": "req-0000001",
        "method": "POST",
        "path": "/api/v1/organizations",
    }
    read = client.get(f"/api/v1/organizations/{created['id']}", headers=bearer(token))
    assert read.json() == created


def test_requests_without_a_valid_token_are_refused_and_recorded(api: Any) -> None:
    client, found, token = api
    for headers in ({}, {"Authorization": "Bearer sbx_not-a-token"}, {"Authorization": token}):
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["detail"] in ("sign in first", "the token is not valid")
    denied = [e for e in entries(found) if e["action"] == "request.denied"]
    assert len(denied) == 3
    assert {e["detail"]["status"] for e in denied} == {401}
    assert all(e["detail"]["request"]["path"] == "/api/v1/me" for e in denied)


def test_a_role_without_the_permission_gets_403_with_the_reason(api: Any) -> None:
    client, found, token = api
    admin = bearer(token)
    acme = client.post(
        "/api/v1/organizations",
        json={"type": "application_unit", "name": "Acme", "credit_code": credit_code(3)},
        headers=admin,
    ).json()
    ann, _ = found.identity.create_user(
        admin_actor(found),
        organization_id=acme["id"],
        username="ann",
        display_name="Ann",
        roles=("applicant",),
    )
    _, ann_token = found.identity.issue_token(ann.actor(), name="laptop")
    response = client.post(
        "/api/v1/organizations",
        json={"type": "provider", "name": "x", "credit_code": credit_code(4)},
        headers=bearer(ann_token),
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "your roles do not allow create on organization"}
    denied = [e for e in entries(found) if e["action"] == "request.denied"][-1]
    assert denied["actor"] == f"user:{ann.id}"
    assert denied["detail"]["roles"] == ["applicant"]
    assert denied["detail"]["action"] == "organization:create"
    me = client.get("/api/v1/me", headers=bearer(ann_token)).json()
    assert (me["username"], me["roles"]) == ("ann", ["applicant"])


def admin_actor(found: Services) -> Actor:
    with found.sessions() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        return Account.of(admin).actor()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "provider", "name": "x", "credit_code": "91370200MA00000020"}, 422),
        ({"type": "bank", "name": "x", "credit_code": "x" * 18}, 422),
        ({"type": "provider", "name": "", "credit_code": "x" * 18}, 422),
        ({"type": "provider", "name": "x", "credit_code": "x" * 18, "extra": 1}, 422),
        ({}, 422),
    ],
)
def test_bad_bodies_get_a_4xx_with_a_reason_and_change_nothing(
    api: Any, body: Any, status: int
) -> None:
    client, found, token = api
    before = found.ledger.size
    response = client.post("/api/v1/organizations", json=body, headers=bearer(token))
    assert response.status_code == status
    assert response.json()["detail"]
    assert found.ledger.size == before


def test_admin_manages_users_and_roles_and_nobody_escalates(api: Any) -> None:
    client, found, token = api
    admin = bearer(token)
    acme = client.post(
        "/api/v1/organizations",
        json={"type": "application_unit", "name": "Acme", "credit_code": credit_code(5)},
        headers=admin,
    ).json()
    made = client.post(
        f"/api/v1/organizations/{acme['id']}/users",
        json={"username": "Ann", "display_name": "李安", "roles": ["applicant"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    ann = made.json()["user"]
    assert (ann["username"], ann["roles"]) == ("ann", ["applicant"])
    password = made.json()["one_time_password"]
    assert password not in (found.ledger.path / "segments" / f"{0:020d}.log").read_text()
    wrong_role = client.post(
        f"/api/v1/users/{ann['id']}/roles", json={"role": "approver"}, headers=admin
    )
    assert wrong_role.status_code == 422
    assert "cannot hold the role approver" in wrong_role.json()["detail"]
    assert (
        client.post(
            f"/api/v1/organizations/{acme['id']}/users", json={"username": "ann"}, headers=admin
        ).status_code
        == 409
    )
    # Ann gets a token for her scripts; she cannot grant herself anything with it.
    ann_account = found.identity.authenticate("ann", password)
    _, ann_token = found.identity.issue_token(ann_account.actor(), name="laptop")
    escalate = client.post(
        f"/api/v1/users/{ann['id']}/roles", json={"role": "applicant"}, headers=bearer(ann_token)
    )
    assert escalate.status_code == 403
    revoked = client.delete(f"/api/v1/users/{ann['id']}/roles/applicant", headers=admin)
    assert revoked.status_code == 204
    # With no role left she may do nothing at all, at once.
    assert client.get("/api/v1/me", headers=bearer(ann_token)).status_code == 403


def test_tokens_are_issued_once_and_revoked_for_good(api: Any) -> None:
    client, found, token = api
    made = client.post("/api/v1/me/tokens", json={"name": "ci", "days": 7}, headers=bearer(token))
    assert made.status_code == 201
    second = made.json()["token"]
    assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200
    assert (
        client.post(
            "/api/v1/me/tokens", json={"name": "x", "days": 400}, headers=bearer(token)
        ).status_code
        == 422
    )
    assert (
        client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=bearer(second)).status_code
        == 204
    )
    assert client.get("/api/v1/me", headers=bearer(second)).status_code == 401
    assert client.delete("/api/v1/tokens/no-such-token", headers=bearer(token)).status_code == 404


def test_oversized_bodies_are_refused_before_any_handler_runs(api: Any) -> None:
    client, found, token = api
    before = found.ledger.size
    huge = b'{"type": "provider", "name": "' + b"x" * (2 << 20) + b'", "credit_code": "x"}'
    declared = client.post(
        "/api/v1/organizations",
        content=huge,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    assert "larger than 1,048,576 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    streamed = client.post(
        "/api/v1/organizations",
        content=chunks(),
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert found.ledger.size == before  # nothing was done, so nothing was recorded
    small = client.post(
        "/api/v1/organizations",
        json={"type": "provider", "name": "ok", "credit_code": credit_code(9)},
        headers=bearer(token),
    )
    assert small.status_code == 201
