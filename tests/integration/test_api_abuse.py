"""Abuse of the identity API, on SQLite and PostgreSQL: calls without a valid token,
privilege escalation through one's own role, organization or account, reading other
organizations' objects by id (IDOR), brute force, and access that must end at once.
Every refusal must also be in the audit ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audit import Ledger
from audit.entry import parse
from gateway.api import (
    context,
    create_app,
    open_agreement_grants,
    open_agreements,
    open_applications,
    open_catalog,
    open_evidence,
    open_exports,
    open_reports,
    open_sandboxes,
    open_trail,
)
from gateway.api.deps import Services
from gateway.authz import Authorizer
from gateway.db import make_engine, migrate, session_factory
from gateway.db.models import OrganizationType
from gateway.identity.model import Account, LockoutPolicy, SignInFailed
from gateway.identity.service import IdentityService
from gateway.settings import load_settings
from gateway.trail.alerts import AlertDetector
from tests.integration.test_identity import FAST_HASHER, Clock, credit_code

API = "/api/v1"


class Gateway:
    """The API over a real database and ledger, with an operator and its administrator,
    an application unit (Acme) with two applicants and a provider (Water) with a steward;
    each person has a token. Time stands still unless a test moves ``clock``."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        settings = load_settings(data_dir=data_dir, database_url=database_url)
        engine = make_engine(settings.database)
        migrate(engine)
        self.ledger = Ledger(settings.ledger_dir)
        record = context.LedgerSink(self.ledger)
        self.clock = Clock()
        sessions = session_factory(engine)
        self.identity = IdentityService(
            sessions,
            Authorizer(settings.policies_dir, record),
            record,
            hasher=FAST_HASHER,
            lockout=LockoutPolicy(max_failures=3, lock_for=timedelta(minutes=15)),
            clock=self.clock,
        )
        catalog = open_catalog(settings, self.identity)
        applying = open_applications(settings, catalog)
        agreements = open_agreements(settings, applying)
        sandboxes = open_sandboxes(settings, self.identity)
        exporting = open_exports(settings, catalog, agreements, sandboxes)
        detector = AlertDetector.from_policies(settings.policies_dir, catalog.calendar)
        trail = open_trail(settings, self.ledger, [detector])
        self.services = Services(
            sessions=sessions,
            ledger=self.ledger,
            authorizer=self.identity.authorizer,
            identity=self.identity,
            catalog=catalog,
            sandboxes=sandboxes,
            applications=applying,
            agreements=agreements,
            agreement_grants=open_agreement_grants(settings, catalog, agreements, sandboxes),
            exports=exporting,
            reports=open_reports(settings, sandboxes),
            trail=trail,
            evidence=open_evidence(settings, trail, applying, exporting),
        )
        made = self.identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
        assert made is not None
        self.admin = made[0]
        admin = self.admin.actor()
        self.acme = self.identity.create_organization(
            admin, kind=OrganizationType.APPLICATION_UNIT, name="Acme", credit_code=credit_code(2)
        )
        self.water = self.identity.create_organization(
            admin, kind=OrganizationType.PROVIDER, name="Water", credit_code=credit_code(3)
        )
        self.ann, self.ann_password = self.member(self.acme.id, "ann", "applicant")
        self.bob, _ = self.member(self.acme.id, "bob", "applicant")
        self.pei, _ = self.member(self.water.id, "pei", "provider_steward")
        self.tokens = {
            account.username: self.identity.issue_token(account.actor(), name="tests")[1]
            for account in (self.admin, self.ann, self.bob, self.pei)
        }
        self.app = create_app(settings, self.services)

    def member(self, organization_id: str, username: str, *roles: str) -> tuple[Account, str]:
        return self.identity.create_user(
            self.admin.actor(),
            organization_id=organization_id,
            username=username,
            display_name=username.title(),
            roles=roles,
        )

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    def entries(self) -> list[dict[str, Any]]:
        return [parse(line) for _, line in self.ledger.entries(1)]

    def close(self) -> None:
        self.services.close()


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Gateway]]:
    made = Gateway(database_url, tmp_path / "var")
    with TestClient(made.app) as client:
        yield client, made
    made.close()


def identity_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the identity routes, with ids filled in."""
    paths = client.get(f"{API}/openapi.json").json()["paths"]
    operations = [
        (method.upper(), path.replace(API, "", 1))
        for path, item in paths.items()
        for method, operation in item.items()
        if {"organizations", "users", "me"} & set(operation.get("tags", []))
    ]
    ids = {"organization_id": "a" * 32, "user_id": "b" * 32, "token_id": "c", "role": "x"}
    return [(method, path.format(**ids)) for method, path in operations]


def call(client: TestClient, method: str, path: str, headers: dict[str, str], **body: Any) -> Any:
    if method in ("POST", "PUT"):
        return client.request(method, API + path, headers=headers, json=body)
    return client.request(method, API + path, headers=headers)


def test_every_identity_route_refuses_callers_without_a_valid_token(gateway: Any) -> None:
    client, made = gateway
    operations = identity_operations(client)
    assert len(operations) >= 15  # the walk found the routes
    refused = (
        {},
        {"Authorization": "Bearer sbx_forged"},
        {"Authorization": "sbx_x"},
        {"Authorization": "Basic c2J4Onh4"},
        {"Authorization": "Bearer "},
    )
    for headers in refused:
        for method, path in operations:
            response = call(client, method, path, headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    denied = [e for e in made.entries() if e["action"] == "request.denied"]
    assert len(denied) == len(refused) * len(operations)
    assert {e["actor"] for e in denied} == {"anonymous"}


def test_expired_and_revoked_tokens_stop_working(gateway: Any) -> None:
    client, made = gateway
    assert client.get(f"{API}/me", headers=made.headers("ann")).status_code == 200
    made.clock.now += timedelta(days=91)  # tokens live 90 days by default
    expired = client.get(f"{API}/me", headers=made.headers("ann"))
    assert (expired.status_code, expired.json()) == (401, {"detail": "the token is not valid"})
    made.clock.now -= timedelta(days=91)
    token_id, secret = made.identity.issue_token(made.ann.actor(), name="short", days=1)
    ann = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"{API}/me", headers=ann).status_code == 200
    # Bob cannot revoke Ann's token (it is not there for him); Ann can.
    assert client.delete(f"{API}/tokens/{token_id}", headers=made.headers("bob")).status_code == 404
    assert client.get(f"{API}/me", headers=ann).status_code == 200
    assert client.delete(f"{API}/tokens/{token_id}", headers=ann).status_code == 204
    assert client.get(f"{API}/me", headers=ann).status_code == 401
    refusals = [e["detail"]["reason"] for e in made.entries() if e["action"] == "request.denied"]
    assert refusals == ["the token is not valid", "the token is not valid"]


def test_an_applicant_cannot_raise_their_own_privileges(gateway: Any) -> None:
    client, made = gateway
    ann = made.headers("ann")
    acme, reason = made.acme.id, {"reason": "me"}
    made.identity.set_organization_flag(made.admin.actor(), acme, True, "court list")
    attempts = [
        ("POST", f"/users/{made.ann.id}/roles", {"role": "applicant"}),
        ("POST", f"/users/{made.bob.id}/roles", {"role": "applicant"}),
        ("DELETE", f"/users/{made.bob.id}/roles/applicant", {}),
        ("PUT", f"/organizations/{acme}/flag", {"flagged": False, **reason}),
        ("PUT", f"/organizations/{acme}/verification", {"status": "verified", **reason}),
        ("PUT", f"/organizations/{acme}/status", {"status": "active", **reason}),
        ("PUT", f"/users/{made.ann.id}/status", {"status": "active", **reason}),
        ("POST", f"/users/{made.ann.id}/unlock", {}),
        ("POST", f"/users/{made.bob.id}/password-reset", {}),
        ("POST", f"/organizations/{acme}/users", {"username": "sock.puppet"}),
        (
            "POST",
            "/organizations",
            {"type": "operator", "name": "x", "credit_code": credit_code(9)},
        ),
    ]
    for method, path, body in attempts:
        response = call(client, method, path, ann, **body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"].startswith("your roles do not allow")
    denied = [e for e in made.entries() if e["action"] == "request.denied"]
    assert len(denied) == len(attempts)
    assert {e["actor"] for e in denied} == {f"user:{made.ann.id}"}
    assert {e["detail"]["roles"][0] for e in denied} == {"applicant"}
    organization = client.get(f"{API}/organizations/{acme}", headers=ann).json()
    assert (organization["flagged"], organization["verification"]) == (True, "unverified")
    me = client.get(f"{API}/me", headers=ann).json()
    assert me["roles"] == ["applicant"]
    bob = client.get(f"{API}/users/{made.bob.id}", headers=ann).json()
    assert bob["roles"] == ["applicant"]


def test_an_administrator_cannot_administer_themselves(gateway: Any) -> None:
    client, made = gateway
    admin = made.headers("admin")
    own_org, own = made.admin.organization_id, made.admin.id
    standing = "nobody changes the standing of their own organization"
    state = "nobody changes the state of their own account"
    attempts = [
        ("POST", f"/users/{own}/roles", {"role": "approver"}, "nobody grants roles to themselves"),
        ("PUT", f"/organizations/{own_org}/verification", {"status": "verified"}, standing),
        ("PUT", f"/organizations/{own_org}/flag", {"flagged": False}, standing),
        ("PUT", f"/organizations/{own_org}/status", {"status": "suspended"}, standing),
        ("PUT", f"/users/{own}/status", {"status": "disabled"}, state),
        ("POST", f"/users/{own}/unlock", {}, state),
        ("POST", f"/users/{own}/password-reset", {}, state),
    ]
    for method, path, body, reason in attempts:
        if method == "PUT":
            body = {**body, "reason": "x"}
        response = call(client, method, path, admin, **body)
        assert (response.status_code, response.json()) == (403, {"detail": reason}), path
    denied = [e for e in made.entries() if e["outcome"] == "denied"]
    assert [e["action"] for e in denied] == [
        "role.grant",
        "organization.verification",
        "organization.flag",
        "organization.status",
        "user.status",
        "user.unlock",
        "user.password_reset",
    ]
    assert all(e["detail"]["request"]["path"].startswith(API) for e in denied)
    assert client.get(f"{API}/me", headers=admin).json()["roles"] == ["admin"]
    # ...while the same operations on someone else work.
    other = call(
        client,
        "PUT",
        f"/organizations/{made.acme.id}/verification",
        admin,
        status="verified",
        reason="licence checked",
    )
    assert other.status_code == 200 and other.json()["verification"] == "verified"


def test_another_organizations_objects_read_as_absent_and_the_attempt_is_recorded(
    gateway: Any,
) -> None:
    client, made = gateway
    ann = made.headers("ann")
    absent_org, absent_user = "f" * 32, "e" * 32
    pairs = [
        (f"/organizations/{made.water.id}", f"/organizations/{absent_org}"),
        (f"/users/{made.pei.id}", f"/users/{absent_user}"),
        (f"/organizations/{made.water.id}/users", f"/organizations/{absent_org}/users"),
    ]
    for other, absent in pairs:
        seen, missing = client.get(API + other, headers=ann), client.get(API + absent, headers=ann)
        assert seen.status_code == missing.status_code == 404
        hidden_id = other.split("/")[2]
        absent_id = absent.split("/")[2]
        assert seen.json()["detail"].replace(hidden_id, "ID") == missing.json()["detail"].replace(
            absent_id, "ID"
        )
        assert set(seen.headers) == set(missing.headers)
    hidden = [e for e in made.entries() if e["action"] in ("organization.read", "user.read")]
    assert [(e["object"], e["detail"]["reason"]) for e in hidden] == [
        (f"org:{made.water.id}", "another organization"),
        (f"org:{absent_org}", "absent"),
        (f"user:{made.pei.id}", "another organization"),
        (f"user:{absent_user}", "absent"),
        (f"org:{made.water.id}", "not the actor's organization"),
        (f"org:{absent_org}", "not the actor's organization"),
    ]
    assert all(e["actor"] == f"user:{made.ann.id}" for e in hidden)
    assert all(e["detail"]["request"]["method"] == "GET" for e in hidden)
    # What Ann may see: her own organization and its members.
    listed = client.get(f"{API}/organizations", headers=ann).json()
    assert [o["id"] for o in listed["items"]] == [made.acme.id] and listed["total"] == 1
    assert client.get(f"{API}/organizations/{made.acme.id}", headers=ann).status_code == 200
    members = client.get(f"{API}/organizations/{made.acme.id}/users", headers=ann).json()
    assert [u["username"] for u in members["items"]] == ["ann", "bob"]
    # The steward sees Water, not Acme; the administrator sees everyone.
    pei = made.headers("pei")
    assert client.get(f"{API}/users/{made.ann.id}", headers=pei).status_code == 404
    everyone = client.get(f"{API}/organizations", headers=made.headers("admin")).json()
    assert everyone["total"] == 3


def test_brute_force_locks_the_account_until_an_administrator_unlocks_it(gateway: Any) -> None:
    client, made = gateway
    for _ in range(3):
        with pytest.raises(SignInFailed):
            made.identity.authenticate("ann", "guess", client="203.0.113.9")
    with pytest.raises(SignInFailed):  # locked: the right password is refused too
        made.identity.authenticate("ann", made.ann_password, client="203.0.113.9")
    state = client.get(f"{API}/users/{made.ann.id}", headers=made.headers("admin")).json()
    assert state["failed_logins"] == 3 and state["locked_until"] is not None
    # Ann's colleague cannot unlock her; an administrator can.
    bob = made.headers("bob")
    assert client.post(f"{API}/users/{made.ann.id}/unlock", headers=bob).status_code == 403
    unlocked = client.post(
        f"{API}/users/{made.ann.id}/unlock",
        json={"reason": "called the help desk"},
        headers=made.headers("admin"),
    )
    assert unlocked.status_code == 200, unlocked.text
    assert (unlocked.json()["failed_logins"], unlocked.json()["locked_until"]) == (0, None)
    assert made.identity.authenticate("ann", made.ann_password).id == made.ann.id
    logins = [e["detail"].get("reason") for e in made.entries() if e["action"] == "session.login"]
    assert logins == [
        "wrong password",
        "wrong password",
        "wrong password; locked after 3 failures",
        "account locked",
        None,
    ]


def test_disabled_users_and_suspended_organizations_lose_access_at_once(gateway: Any) -> None:
    client, made = gateway
    admin, ann = made.headers("admin"), made.headers("ann")

    def status_of(body: dict[str, str], path: str) -> int:
        return int(client.put(API + path, json=body, headers=admin).status_code)

    assert client.get(f"{API}/me", headers=ann).status_code == 200
    assert (
        status_of({"status": "disabled", "reason": "left"}, f"/users/{made.ann.id}/status") == 200
    )
    assert client.get(f"{API}/me", headers=ann).status_code == 401
    assert client.get(f"{API}/me", headers=made.headers("bob")).status_code == 200
    assert status_of({"status": "active", "reason": "back"}, f"/users/{made.ann.id}/status") == 200
    assert client.get(f"{API}/me", headers=ann).status_code == 200
    suspend = {"status": "suspended", "reason": "R19 violation"}
    assert status_of(suspend, f"/organizations/{made.acme.id}/status") == 200
    for name in ("ann", "bob"):
        assert client.get(f"{API}/me", headers=made.headers(name)).status_code == 401
    assert client.get(f"{API}/me", headers=made.headers("pei")).status_code == 200
    with pytest.raises(SignInFailed):
        made.identity.authenticate("ann", made.ann_password)
    activate = {"status": "active", "reason": "remedied"}
    assert status_of(activate, f"/organizations/{made.acme.id}/status") == 200
    assert client.get(f"{API}/me", headers=ann).status_code == 200
    changes = [
        (e["action"], e["detail"]["status"], e["detail"]["reason"])
        for e in made.entries()
        if e["action"] in ("user.status", "organization.status")
    ]
    assert changes == [
        ("user.status", "disabled", "left"),
        ("user.status", "active", "back"),
        ("organization.status", "suspended", "R19 violation"),
        ("organization.status", "active", "remedied"),
    ]


def test_a_password_reset_is_shown_once_and_never_recorded(gateway: Any) -> None:
    client, made = gateway
    reset = client.post(
        f"{API}/users/{made.ann.id}/password-reset",
        json={"reason": "forgotten"},
        headers=made.headers("admin"),
    )
    assert reset.status_code == 200, reset.text
    password = reset.json()["one_time_password"]
    assert reset.json()["user"]["must_change_password"] is True
    with pytest.raises(SignInFailed):
        made.identity.authenticate("ann", made.ann_password)
    assert made.identity.authenticate("ann", password).must_change_password
    log = (made.ledger.path / "segments" / f"{0:020d}.log").read_text()
    assert password not in log
    entry = next(e for e in made.entries() if e["action"] == "user.password_reset")
    assert entry["actor"] == f"user:{made.admin.id}" and entry["detail"]["reason"] == "forgotten"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/organizations?limit=0", None),
        ("GET", "/organizations?limit=101", None),
        ("GET", "/organizations?offset=-1", None),
        ("GET", "/organizations?offset=99999999999999999999", None),
        ("GET", "/organizations?type=bank", None),
        ("GET", "/organizations?q=" + "x" * 101, None),
        ("GET", "/organizations?q=a%00b", None),
        ("GET", "/organizations/" + "a" * 65, None),
        ("GET", "/organizations/a%00b", None),
        ("GET", "/users/a.b", None),
        ("PUT", "/organizations/{acme}/status", {"status": "gone", "reason": "x"}),
        ("PUT", "/organizations/{acme}/status", {"status": "active"}),
        ("PUT", "/organizations/{acme}/status", {"status": "active", "reason": "x", "by": "me"}),
        ("PUT", "/organizations/{acme}/status", {"status": "active", "reason": "a\x00b"}),
        ("PUT", "/organizations/{acme}/verification", {"status": "unverified", "reason": "x"}),
        ("PUT", "/organizations/{acme}/flag", {"flagged": "maybe", "reason": "x"}),
        ("PUT", "/organizations/{acme}/flag", {"flagged": 0, "reason": "x"}),  # no coercion
        ("PUT", "/organizations/{acme}/flag", {"flagged": True, "reason": "x" * 501}),
        ("PUT", "/users/{ann}/status", {"status": "active", "reason": "   "}),
        ("POST", "/users/{ann}/unlock", {"reason": "x", "extra": 1}),
        ("POST", "/users/{ann}/password-reset", {"reason": "\x07"}),
        ("POST", "/users/{ann}/roles", {"role": "Admin; drop"}),
        ("DELETE", "/users/{ann}/roles/a%00", None),
        ("POST", "/organizations", {"type": "provider", "name": "\x00", "credit_code": "x" * 18}),
        ("POST", "/organizations/{acme}/users", {"username": "zoe", "display_name": "\x00"}),
        ("POST", "/organizations/{acme}/users", {"username": "zoë"}),
        ("POST", "/me/tokens", {"name": "ci", "days": "7"}),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason_and_changes_nothing(
    gateway: Any, method: str, path: str, body: Any
) -> None:
    client, made = gateway
    before = made.ledger.size
    url = API + path.format(acme=made.acme.id, ann=made.ann.id)
    response = client.request(method, url, json=body, headers=made.headers("admin"))
    assert response.status_code in (404, 422), response.text
    assert response.json()["detail"]
    assert made.ledger.size == before
