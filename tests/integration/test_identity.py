"""Organizations, users, role grants and sign-in, on SQLite and PostgreSQL, with a real
ledger: every change and every refusal is recorded, and nothing happens unrecorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from audit import Ledger
from audit.entry import parse
from gateway.authz import Actor, Authorizer, Denied
from gateway.db import make_engine, migrate, session_factory
from gateway.db.models import OrganizationStatus, OrganizationType
from gateway.identity.credit_code import check_character
from gateway.identity.service import (
    Conflict,
    IdentityError,
    IdentityService,
    LockoutPolicy,
    NotFound,
    SignInFailed,
    actor_of,
)
from tests.conftest import REPO_ROOT

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)  # still argon2id


def credit_code(serial: int) -> str:
    head = f"91370200MA{serial:07d}"
    return head + check_character(head)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    """A real database, ledger, policy and service, with an operator and its admin."""

    def __init__(self, url: str, ledger_path: Path) -> None:
        self.engine = make_engine(url)
        migrate(self.engine)
        self.ledger = Ledger(ledger_path)
        self.fail_ledger = False
        self.clock = Clock()
        authorizer = Authorizer(REPO_ROOT / "policies", self.record)
        self.service = IdentityService(
            session_factory(self.engine),
            authorizer,
            self.record,
            hasher=FAST_HASHER,
            lockout=LockoutPolicy(max_failures=3, lock_for=timedelta(minutes=15)),
            clock=self.clock,
        )
        made = self.service.bootstrap_admin(
            operator_name="青岛数据运营", credit_code=credit_code(1)
        )
        assert made is not None
        self.admin_user, self.admin_password = made
        self.admin = actor_of(self.admin_user)

    def record(self, fields: dict[str, Any]) -> None:
        if self.fail_ledger:
            raise OSError("the ledger's disk is full")
        self.ledger.append(**fields)

    def entries(self) -> list[dict[str, Any]]:
        return [parse(line) for _, line in self.ledger.entries(1)]

    def close(self) -> None:
        self.ledger.close()
        self.engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Any:
    made = World(database_url, tmp_path / "ledger")
    yield made
    made.close()


def test_first_run_creates_one_admin_with_a_one_time_password(world: World) -> None:
    assert world.service.bootstrap_admin(operator_name="x", credit_code=credit_code(2)) is None
    user = world.service.authenticate("admin", world.admin_password)
    assert user.must_change_password
    assert world.admin.roles == {"admin"}
    actions = [entry["action"] for entry in world.entries()]
    assert actions[:2] == ["policy.load", "user.bootstrap"]
    assert (
        world.admin_password
        not in world.ledger.path.joinpath("segments")
        .joinpath("00000000000000000000.log")
        .read_text()
    )  # secrets never reach the ledger


def test_admin_creates_organizations_and_users_with_roles_that_fit(world: World) -> None:
    acme = world.service.create_organization(
        world.admin,
        kind=OrganizationType.APPLICATION_UNIT,
        name="Acme 数据",
        credit_code=credit_code(3),
    )
    ann, password = world.service.create_user(
        world.admin,
        organization_id=acme.id,
        username="Ann.Li",
        display_name="李安",
        roles=("applicant",),
    )
    assert ann.username == "ann.li"
    signed_in = world.service.authenticate("ann.li", password, client="127.0.0.1")
    assert actor_of(signed_in).roles == {"applicant"}
    assert world.service.authorizer.allows(actor_of(signed_in), "application", "submit")
    with pytest.raises(IdentityError, match="cannot hold the role reviewer"):
        world.service.create_user(
            world.admin,
            organization_id=acme.id,
            username="bob",
            display_name="",
            roles=("reviewer",),
        )
    with pytest.raises(Conflict, match="credit code"):
        world.service.create_organization(
            world.admin, kind=OrganizationType.PROVIDER, name="again", credit_code=credit_code(3)
        )
    with pytest.raises(IdentityError, match="check character"):
        world.service.create_organization(
            world.admin,
            kind=OrganizationType.PROVIDER,
            name="typo",
            credit_code=credit_code(4)[:-1] + "0",
        )
    with pytest.raises(Conflict, match="taken"):
        world.service.create_user(
            world.admin, organization_id=acme.id, username="ann.li", display_name=""
        )
    with pytest.raises(NotFound):
        world.service.create_user(
            world.admin, organization_id="nope", username="carl", display_name=""
        )
    actions = [(e["action"], e["outcome"]) for e in world.entries()]
    assert ("organization.create", "ok") in actions
    assert ("user.create", "ok") in actions
    assert ("session.login", "ok") in actions


def test_nobody_escalates_their_own_privileges(world: World) -> None:
    acme = world.service.create_organization(
        world.admin, kind=OrganizationType.APPLICATION_UNIT, name="Acme", credit_code=credit_code(5)
    )
    ann, _ = world.service.create_user(
        world.admin, organization_id=acme.id, username="ann", display_name="", roles=("applicant",)
    )
    applicant = actor_of(ann)
    with pytest.raises(Denied, match="do not allow grant on role"):
        world.service.grant_role(applicant, ann.id, "applicant")
    with pytest.raises(Denied):
        world.service.create_user(applicant, organization_id=acme.id, username="x", display_name="")
    with pytest.raises(Denied, match="themselves"):
        world.service.grant_role(world.admin, world.admin_user.id, "approver")
    denied = [e for e in world.entries() if e["outcome"] == "denied"]
    assert [e["action"] for e in denied] == ["role.grant", "user.create", "role.grant"]
    assert denied[0]["actor"] == applicant.user


def test_roles_granted_and_revoked_take_effect_at_once(world: World) -> None:
    operator_id = world.admin_user.organization_id
    rita, _ = world.service.create_user(
        world.admin, organization_id=operator_id, username="rita", display_name=""
    )
    rita_actor = Actor(f"user:{rita.id}", f"org:{operator_id}", frozenset({"reviewer"}))
    assert not world.service.authorizer.allows(rita_actor, "application", "review")
    world.service.grant_role(world.admin, rita.id, "reviewer")
    assert world.service.authorizer.allows(rita_actor, "application", "review")
    with pytest.raises(Conflict):
        world.service.grant_role(world.admin, rita.id, "reviewer")
    world.service.revoke_role(world.admin, rita.id, "reviewer")
    assert not world.service.authorizer.allows(rita_actor, "application", "review")
    with pytest.raises(NotFound):
        world.service.revoke_role(world.admin, rita.id, "reviewer")


def test_repeated_wrong_passwords_lock_the_account_for_a_while(world: World) -> None:
    for _ in range(3):
        with pytest.raises(SignInFailed):
            world.service.authenticate("admin", "wrong password")
    with pytest.raises(SignInFailed):  # locked: even the right password is refused
        world.service.authenticate("admin", world.admin_password)
    world.clock.now += timedelta(minutes=16)
    assert world.service.authenticate("admin", world.admin_password).failed_logins == 0
    with pytest.raises(SignInFailed) as unknown:
        world.service.authenticate("nobody", "x")
    assert str(unknown.value) == str(SignInFailed())  # the same words for every failure
    reasons = [e["detail"].get("reason") for e in world.entries() if e["action"] == "session.login"]
    assert reasons == [
        "wrong password",
        "wrong password",
        "wrong password; locked after 3 failures",
        "account locked",
        None,
        "unknown user",
    ]


def test_a_suspended_organization_cannot_sign_in(world: World) -> None:
    acme = world.service.create_organization(
        world.admin, kind=OrganizationType.APPLICATION_UNIT, name="Acme", credit_code=credit_code(6)
    )
    _, password = world.service.create_user(
        world.admin, organization_id=acme.id, username="ann", display_name=""
    )
    world.service.set_organization_status(
        world.admin, acme.id, OrganizationStatus.SUSPENDED, "R19 violation"
    )
    with pytest.raises(SignInFailed):
        world.service.authenticate("ann", password)


def test_nothing_changes_that_the_ledger_does_not_record(world: World) -> None:
    world.fail_ledger = True
    with pytest.raises(OSError, match="disk is full"):
        world.service.create_organization(
            world.admin, kind=OrganizationType.PROVIDER, name="Water", credit_code=credit_code(7)
        )
    world.fail_ledger = False
    # The organization was rolled back with the failed record: creating it again works.
    created = world.service.create_organization(
        world.admin, kind=OrganizationType.PROVIDER, name="Water", credit_code=credit_code(7)
    )
    assert created.name == "Water"


def test_passwords_change_only_with_the_current_one_and_a_long_new_one(world: World) -> None:
    user_id = world.admin_user.id
    with pytest.raises(IdentityError, match="at least 12"):
        world.service.set_password(user_id, world.admin_password, "short")
    with pytest.raises(IdentityError, match="current password is wrong"):
        world.service.set_password(user_id, "not it", "a long new passphrase")
    world.service.set_password(user_id, world.admin_password, "a long new passphrase")
    user = world.service.authenticate("admin", "a long new passphrase")
    assert not user.must_change_password


def test_api_tokens_are_shown_once_expire_and_can_be_revoked(world: World) -> None:
    token_id, secret = world.service.issue_token(world.admin, name="nightly export", days=30)
    assert secret.startswith("sbx_") and len(secret) > 40
    assert world.service.authenticate_token(secret).id == world.admin_user.id
    stored = world.ledger.path.joinpath("segments", "00000000000000000000.log").read_text()
    assert secret not in stored and token_id in stored
    for bad in ("", "sbx_", secret[:-1], secret + "x", "Bearer " + secret):
        with pytest.raises(SignInFailed):
            world.service.authenticate_token(bad)
    world.clock.now += timedelta(days=31)
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)
    world.clock.now -= timedelta(days=31)
    world.service.revoke_token(world.admin, token_id)
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)
    for days in (0, 366):
        with pytest.raises(IdentityError, match="1 to 365 days"):
            world.service.issue_token(world.admin, name="x", days=days)


def test_nobody_revokes_another_persons_token_but_an_admin(world: World) -> None:
    acme = world.service.create_organization(
        world.admin, kind=OrganizationType.APPLICATION_UNIT, name="Acme", credit_code=credit_code(8)
    )
    ann, _ = world.service.create_user(
        world.admin, organization_id=acme.id, username="ann", display_name="", roles=("applicant",)
    )
    bob, _ = world.service.create_user(
        world.admin, organization_id=acme.id, username="bob", display_name="", roles=("applicant",)
    )
    token_id, secret = world.service.issue_token(ann.actor(), name="laptop")
    with pytest.raises(NotFound):
        world.service.revoke_token(bob.actor(), token_id)
    assert world.service.authenticate_token(secret).id == ann.id
    world.service.revoke_token(world.admin, token_id)
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)


def test_a_second_factor_once_enabled_is_required(world: World) -> None:
    import pyotp

    secret = world.service.new_totp_secret()
    assert world.service.totp_uri(secret, "admin").startswith("otpauth://totp/sbx:admin")
    code = pyotp.TOTP(secret).at(world.clock.now)
    with pytest.raises(IdentityError, match="does not match"):
        world.service.enable_totp(
            world.admin_user.id, secret, "000000" if code != "000000" else "111111"
        )
    world.service.enable_totp(world.admin_user.id, secret, code)
    with pytest.raises(SignInFailed):
        world.service.authenticate("admin", world.admin_password)
    with pytest.raises(SignInFailed):
        world.service.authenticate(
            "admin", world.admin_password, totp="123456" if code != "123456" else "654321"
        )
    with pytest.raises(SignInFailed):  # the code that enabled it cannot sign in
        world.service.authenticate("admin", world.admin_password, totp=code)
    world.clock.now += timedelta(seconds=30)
    fresh = pyotp.TOTP(secret).at(world.clock.now)
    signed_in = world.service.authenticate("admin", world.admin_password, totp=fresh)
    assert signed_in.id == world.admin_user.id
    with pytest.raises(SignInFailed):  # nor can any code be used twice
        world.service.authenticate("admin", world.admin_password, totp=fresh)
    reasons = [e["detail"].get("reason") for e in world.entries() if e["action"] == "session.login"]
    assert reasons == [
        "second factor missing",
        "wrong second factor",
        "second factor used before",
        None,
        "second factor used before",
    ]
