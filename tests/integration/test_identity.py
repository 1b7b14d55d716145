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
from gateway.db.models import ApiToken, OrganizationStatus, OrganizationType
from gateway.identity.model import (
    Conflict,
    IdentityError,
    LockoutPolicy,
    NotFound,
    SignInFailed,
    actor_of,
)
from gateway.identity.service import IdentityService
from gateway.identity.sessions import SessionService
from sandbox.identifiers.credit_code import check_character
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

    def another_process(self) -> IdentityService:
        """A second service over the same database, with an authorizer of its own."""
        return IdentityService(
            self.service.sessions,
            Authorizer(REPO_ROOT / "policies", self.record),
            self.record,
            hasher=FAST_HASHER,
        )

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


# ------------------------------------------------------------------ the read side and admin


def organization(world: World, serial: int, kind: OrganizationType, name: str = "") -> Any:
    return world.service.create_organization(
        world.admin, kind=kind, name=name or f"Org {serial}", credit_code=credit_code(serial)
    )


def member(world: World, organization_id: str, username: str, *roles: str) -> tuple[Any, str]:
    return world.service.create_user(
        world.admin,
        organization_id=organization_id,
        username=username,
        display_name="",
        roles=roles,
    )


def denied_entries(world: World, action: str) -> list[dict[str, Any]]:
    return [e for e in world.entries() if e["action"] == action and e["outcome"] == "denied"]


def test_members_read_only_their_own_organization_and_others_read_as_absent(
    world: World,
) -> None:
    acme = organization(world, 20, OrganizationType.APPLICATION_UNIT, "Acme")
    water = organization(world, 21, OrganizationType.PROVIDER, "Water")
    authority = organization(world, 22, OrganizationType.REGULATOR, "Authority")
    ann, _ = member(world, acme.id, "ann", "applicant")
    member(world, acme.id, "bob", "applicant")
    pei, _ = member(world, water.id, "pei", "provider_steward")
    reg, _ = member(world, authority.id, "reg", "regulator")
    applicant = ann.actor()

    assert [o.id for o in world.service.list_organizations(applicant).items] == [acme.id]
    assert world.service.get_organization(applicant, acme.id) == acme
    absent = "0" * 32
    for hidden in (water.id, absent):
        with pytest.raises(NotFound) as refused:
            world.service.get_organization(applicant, hidden)
        assert str(refused.value) == f"no organization {hidden}"  # the same words for both
    with pytest.raises(NotFound, match=f"no user {pei.id}"):
        world.service.get_user(applicant, pei.id)
    with pytest.raises(NotFound, match="no user pei"):
        world.service.find_user(applicant, "pei")
    with pytest.raises(NotFound, match=f"no organization {water.id}"):
        world.service.list_users(applicant, organization_id=water.id)
    with pytest.raises(NotFound):
        world.service.find_organization(applicant, credit_code(21))
    colleagues = world.service.list_users(applicant)
    assert [u.username for u in colleagues.items] == ["ann", "bob"]
    assert world.service.get_user(applicant, ann.id).organization_id == acme.id

    reasons = [e["detail"]["reason"] for e in denied_entries(world, "organization.read")]
    assert reasons == ["another organization", "absent", "another organization"]
    hidden_users = denied_entries(world, "user.read")
    assert [(e["object"], e["detail"]["reason"]) for e in hidden_users] == [
        (f"user:{pei.id}", "another organization"),
        ("username:pei", "another organization"),
        (f"org:{water.id}", "not the actor's organization"),
    ]
    assert {e["actor"] for e in hidden_users} == {applicant.user}

    for overseer in (world.admin, reg.actor()):  # administrators and regulators see all
        everyone = world.service.list_organizations(overseer)
        assert {acme.id, water.id, authority.id} <= {o.id for o in everyone.items}
        assert world.service.get_organization(overseer, water.id).name == "Water"
        assert world.service.get_user(overseer, pei.id).roles == {"provider_steward"}
        assert world.service.find_organization(overseer, credit_code(21)).id == water.id
        with pytest.raises(NotFound):
            world.service.get_organization(overseer, absent)


def test_listings_filter_page_and_count(world: World) -> None:
    made = [
        organization(world, 30 + n, kind, name)
        for n, (kind, name) in enumerate(
            [
                (OrganizationType.PROVIDER, "青岛水务"),
                (OrganizationType.PROVIDER, "Qingdao Power"),
                (OrganizationType.APPLICATION_UNIT, "Acme 100% Data"),
                (OrganizationType.APPLICATION_UNIT, "Beta_Labs"),
                (OrganizationType.APPLICATION_UNIT, "Gamma"),
            ]
        )
    ]
    world.service.set_organization_status(
        world.admin, made[4].id, OrganizationStatus.SUSPENDED, "audit"
    )
    service, admin = world.service, world.admin
    providers = service.list_organizations(admin, kind=OrganizationType.PROVIDER)
    assert [o.name for o in providers.items] == ["青岛水务", "Qingdao Power"]
    suspended = service.list_organizations(admin, status=OrganizationStatus.SUSPENDED)
    assert [o.name for o in suspended.items] == ["Gamma"]
    assert [o.name for o in service.list_organizations(admin, text="qingdao").items] == [
        "Qingdao Power"
    ]
    assert [o.name for o in service.list_organizations(admin, text="水务").items] == ["青岛水务"]
    by_code = service.list_organizations(admin, text=credit_code(33)[-8:].lower())
    assert [o.name for o in by_code.items] == ["Beta_Labs"]
    # LIKE's wildcards are plain characters in a search.
    assert [o.name for o in service.list_organizations(admin, text="%").items] == ["Acme 100% Data"]
    assert [o.name for o in service.list_organizations(admin, text="a_l").items] == ["Beta_Labs"]

    everything = [o.id for o in service.list_organizations(admin, limit=100).items]
    assert everything[1:] == [o.id for o in made]  # the operator first: oldest first
    pages = [service.list_organizations(admin, offset=n, limit=2) for n in (0, 2, 4)]
    assert [o.id for page in pages for o in page.items] == everything
    assert {page.total for page in pages} == {6}
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 101}, {"text": "a\x00b"}):
        with pytest.raises(IdentityError):
            service.list_organizations(admin, **bad)  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        service.list_users(admin, text="x" * 101)
    assert service.list_users(admin).total == 1  # the administrator, across organizations
    with pytest.raises(NotFound):
        service.list_users(admin, organization_id="f" * 32)


def test_administrators_verify_flag_suspend_with_a_recorded_reason(world: World) -> None:
    from gateway.db.models import VerificationStatus as V

    acme = organization(world, 40, OrganizationType.APPLICATION_UNIT)
    service, admin = world.service, world.admin
    assert acme.verification is V.UNVERIFIED and not acme.flagged
    assert service.set_organization_verification(admin, acme.id, V.REJECTED, "licence expired")
    verified = service.set_organization_verification(admin, acme.id, V.VERIFIED, "renewed")
    assert verified.verification is V.VERIFIED
    assert service.set_organization_verification(admin, acme.id, V.VERIFIED, "again").verification
    with pytest.raises(Conflict, match="verified to unverified"):
        service.set_organization_verification(admin, acme.id, V.UNVERIFIED, "undo")
    assert service.set_organization_flag(admin, acme.id, True, "court list 2026-11").flagged
    assert not service.set_organization_flag(admin, acme.id, False, "appeal won").flagged
    suspended = service.set_organization_status(admin, acme.id, OrganizationStatus.SUSPENDED, "R19")
    assert suspended.status is OrganizationStatus.SUSPENDED
    for empty in ("", "   "):
        with pytest.raises(IdentityError, match="a reason is needed"):
            service.set_organization_flag(admin, acme.id, True, empty)
    with pytest.raises(IdentityError, match="at most 500"):
        service.set_organization_flag(admin, acme.id, True, "x" * 501)
    with pytest.raises(NotFound):
        service.set_organization_flag(admin, "nope", True, "x")
    assert service.get_organization(admin, acme.id).verification is V.VERIFIED
    changes = [
        (e["action"], e["detail"]["previous"], e["detail"]["reason"])
        for e in world.entries()
        if e["object"] == f"org:{acme.id}" and e["action"] != "organization.create"
    ]
    assert changes == [
        ("organization.verification", "unverified", "licence expired"),
        ("organization.verification", "rejected", "renewed"),
        ("organization.verification", "verified", "again"),
        ("organization.flag", False, "court list 2026-11"),
        ("organization.flag", True, "appeal won"),
        ("organization.status", "active", "R19"),
    ]


def test_nobody_administers_their_own_organization_or_account(world: World) -> None:
    from gateway.db.models import UserStatus
    from gateway.db.models import VerificationStatus as V

    service, admin = world.service, world.admin
    operator_id = world.admin_user.organization_id
    own = world.admin_user.id
    attempts = [
        lambda: service.set_organization_verification(admin, operator_id, V.VERIFIED, "me"),
        lambda: service.set_organization_flag(admin, operator_id, False, "me"),
        lambda: service.set_organization_status(
            admin, operator_id, OrganizationStatus.SUSPENDED, "me"
        ),
        lambda: service.set_user_status(admin, own, UserStatus.DISABLED, "me"),
        lambda: service.set_user_status(admin, own, UserStatus.ACTIVE, "me"),
        lambda: service.unlock_user(admin, own),
        lambda: service.reset_password(admin, own),
    ]
    for attempt in attempts:
        with pytest.raises(Denied, match="their own"):
            attempt()
    denied = [e for e in world.entries() if e["outcome"] == "denied"]
    assert [e["action"] for e in denied] == [
        "organization.verification",
        "organization.flag",
        "organization.status",
        "user.status",
        "user.status",
        "user.unlock",
        "user.password_reset",
    ]
    # An applicant may not touch their own organization's standing at all.
    acme = organization(world, 41, OrganizationType.APPLICATION_UNIT)
    ann, _ = member(world, acme.id, "ann", "applicant")
    for attempt in (
        lambda: service.set_organization_verification(ann.actor(), acme.id, V.VERIFIED, "x"),
        lambda: service.set_organization_flag(ann.actor(), acme.id, False, "x"),
        lambda: service.unlock_user(ann.actor(), ann.id),
    ):
        with pytest.raises(Denied, match="your roles do not allow"):
            attempt()
    assert service.get_organization(admin, acme.id).verification is V.UNVERIFIED


def test_the_platform_keeps_an_active_administrator(world: World) -> None:
    from gateway.db.models import UserStatus

    service, admin = world.service, world.admin
    operator_id = world.admin_user.organization_id
    with pytest.raises(Conflict, match="without an active administrator"):
        service.revoke_role(admin, world.admin_user.id, "admin")
    shell = service.shell_actor("root")
    with pytest.raises(Conflict, match="without an active administrator"):
        service.set_user_status(shell, world.admin_user.id, UserStatus.DISABLED, "leaving")
    with pytest.raises(Conflict, match="without an active administrator"):
        service.set_organization_status(shell, operator_id, OrganizationStatus.SUSPENDED, "x")
    second, _ = member(world, operator_id, "second", "admin")
    service.set_user_status(shell, world.admin_user.id, UserStatus.DISABLED, "leaving")
    assert service.get_user(shell, world.admin_user.id).status is UserStatus.DISABLED
    with pytest.raises(Conflict):
        service.revoke_role(shell, second.id, "admin")
    service.set_user_status(second.actor(), world.admin_user.id, UserStatus.ACTIVE, "back")
    service.revoke_role(admin, admin.user.removeprefix("user:"), "admin")  # one's own, not last
    assert service.get_user(shell, world.admin_user.id).roles == frozenset()


def test_disabled_users_and_suspended_organizations_lose_access_at_once(world: World) -> None:
    from gateway.db.models import UserStatus

    acme = organization(world, 42, OrganizationType.APPLICATION_UNIT)
    ann, password = member(world, acme.id, "ann", "applicant")
    _, secret = world.service.issue_token(ann.actor(), name="laptop")
    assert world.service.authenticate_token(secret).id == ann.id
    disabled = world.service.set_user_status(world.admin, ann.id, UserStatus.DISABLED, "left")
    assert disabled.status is UserStatus.DISABLED
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)
    with pytest.raises(SignInFailed):
        world.service.authenticate("ann", password)
    world.service.set_user_status(world.admin, ann.id, UserStatus.ACTIVE, "rehired")
    assert world.service.authenticate_token(secret).id == ann.id
    world.service.set_organization_status(world.admin, acme.id, OrganizationStatus.SUSPENDED, "x")
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)
    world.service.set_organization_status(world.admin, acme.id, OrganizationStatus.ACTIVE, "ok")
    assert world.service.authenticate_token(secret).id == ann.id
    reasons = [e["detail"]["reason"] for e in world.entries() if e["action"] == "session.login"]
    assert reasons == ["account disabled"]


def test_unlock_and_password_reset_by_an_administrator(world: World) -> None:
    import pyotp

    acme = organization(world, 43, OrganizationType.APPLICATION_UNIT)
    ann, password = member(world, acme.id, "ann", "applicant")
    for _ in range(3):
        with pytest.raises(SignInFailed):
            world.service.authenticate("ann", "wrong")
    assert world.service.get_user(world.admin, ann.id).locked(world.clock.now)
    with pytest.raises(SignInFailed):
        world.service.authenticate("ann", password)
    unlocked = world.service.unlock_user(world.admin, ann.id, "phoned the help desk")
    assert not unlocked.locked(world.clock.now) and unlocked.failed_logins == 0
    ann_actor = world.service.authenticate("ann", password).actor()
    assert ann_actor.user == f"user:{ann.id}"
    kept_id, kept = world.service.issue_token(ann_actor, name="laptop")
    gone_id, _ = world.service.issue_token(ann_actor, name="old")
    world.service.revoke_token(ann_actor, gone_id)
    assert world.service.authenticate_token(kept).id == ann.id

    user, fresh = world.service.reset_password(world.admin, ann.id, "forgotten")
    with pytest.raises(SignInFailed):  # a reset revokes the tokens too
        world.service.authenticate_token(kept)
    assert user.must_change_password and fresh != password and len(fresh) >= 16
    with pytest.raises(SignInFailed):
        world.service.authenticate("ann", password)
    assert world.service.authenticate("ann", fresh).must_change_password
    log = world.ledger.path.joinpath("segments", "00000000000000000000.log").read_text()
    assert fresh not in log and password not in log
    entry = next(e for e in world.entries() if e["action"] == "user.password_reset")
    assert entry["actor"] == world.admin.user
    assert entry["detail"] == {"reason": "forgotten", "tokens_revoked": 1}

    # With a second factor, the one-time password alone signs nobody in.
    secret = world.service.new_totp_secret()
    world.service.enable_totp(ann.id, secret, pyotp.TOTP(secret).at(world.clock.now))
    _, another = world.service.reset_password(world.admin, ann.id)
    assert world.service.get_user(world.admin, ann.id).second_factor
    with pytest.raises(SignInFailed):
        world.service.authenticate("ann", another)
    world.clock.now += timedelta(seconds=30)
    code = pyotp.TOTP(secret).at(world.clock.now)
    assert world.service.authenticate("ann", another, totp=code).id == ann.id


def test_the_shell_acts_as_a_recorded_administrator(world: World) -> None:
    shell = world.service.shell_actor("alice")
    assert shell.user == "system:cli"
    assert world.service.authorizer.allows(shell, "organization", "create")
    for obj, act in (("view", "read"), ("application", "approve"), ("dataset", "upload")):
        assert not world.service.authorizer.allows(shell, obj, act)  # admin denies hold
    water = world.service.create_organization(
        shell, kind=OrganizationType.PROVIDER, name="Water", credit_code=credit_code(44)
    )
    pei, _ = member(world, water.id, "pei", "provider_steward")
    world.service.grant_role(shell, world.admin_user.id, "approver")  # no self to guard
    _, recovered = world.service.reset_password(shell, world.admin_user.id, "lost")
    assert world.service.authenticate("admin", recovered).id == world.admin_user.id
    assert world.service.get_user(shell, pei.id).username == "pei"
    # Still held after other grants change (the shell's grant is not in the database).
    assert world.service.authorizer.allows(shell, "user", "reset_password")
    taken = [
        (e["actor"], e["object"], e["detail"])
        for e in world.entries()
        if e["action"] == "session.shell"
    ]
    assert taken == [("system:cli", "system:cli", {"os_user": "alice", "roles": ["admin"]})]
    creator = next(e for e in world.entries() if e["action"] == "organization.create")
    assert creator["actor"] == "system:cli"


def test_grants_changed_by_another_process_apply_at_the_next_sign_in(world: World) -> None:
    acme = organization(world, 45, OrganizationType.APPLICATION_UNIT)
    ann, _ = member(world, acme.id, "ann", "applicant")
    _, secret = world.service.issue_token(ann.actor(), name="laptop")
    other = world.another_process()  # `sbx user revoke` beside the running gateway
    other.revoke_role(other.shell_actor("root"), ann.id, "applicant")
    served = world.service.authorizer
    assert served.allows(ann.actor(), "application", "submit")  # stale until asked
    signed_in = world.service.authenticate_token(secret)
    assert signed_in.roles == frozenset()
    assert not served.allows(signed_in.actor(), "application", "submit")
    assert not served.allows(ann.actor(), "application", "submit")


def test_grants_changed_elsewhere_apply_once_a_resolved_account_is_synced(world: World) -> None:
    acme = organization(world, 46, OrganizationType.APPLICATION_UNIT)
    ann, _ = member(world, acme.id, "ann", "applicant")
    other = world.another_process()
    other.revoke_role(other.shell_actor("root"), ann.id, "applicant")
    resolved = other.get_user(other.shell_actor("root"), ann.id)  # as a session would read it
    assert world.service.authorizer.allows(ann.actor(), "application", "submit")
    world.service.sync_grants(resolved)
    assert not world.service.authorizer.allows(ann.actor(), "application", "submit")


def test_a_tokens_last_use_is_kept_without_a_write_per_request(world: World) -> None:
    token_id, secret = world.service.issue_token(world.admin, name="reports")

    def last_used() -> datetime | None:
        with world.service.sessions() as session:
            return session.get(ApiToken, token_id).last_used_at  # type: ignore[union-attr]

    assert last_used() is None
    world.service.authenticate_token(secret)
    first = world.clock.now
    assert last_used() == first
    world.clock.now += timedelta(seconds=30)
    world.service.authenticate_token(secret)
    assert last_used() == first  # at most one write a minute
    world.clock.now += timedelta(seconds=31)
    world.service.authenticate_token(secret)
    assert last_used() == world.clock.now


def test_a_password_reset_ends_the_sessions_opened_before_it(world: World) -> None:
    unit = organization(world, 90, OrganizationType.APPLICATION_UNIT)
    user, password = member(world, unit.id, "zhou", "applicant")
    browser = SessionService(world.service.sessions, world.service, clock=world.clock)
    before = browser.sign_in("zhou", password)
    assert browser.resolve(before.secret) is not None
    world.clock.now += timedelta(seconds=1)
    _, one_time = world.service.reset_password(world.admin, user.id, "lost phone")
    assert browser.resolve(before.secret) is None
    world.clock.now += timedelta(seconds=1)
    after = browser.sign_in("zhou", one_time)
    assert browser.resolve(after.secret) is not None


def test_the_token_cache_forgets_a_revoked_token_at_once_and_others_after_seconds(
    world: World,
) -> None:
    token_id, secret = world.service.issue_token(world.admin, name="cached", days=1)
    assert world.service.cached_token(secret) is None  # nothing read yet
    account = world.service.authenticate_token(secret)  # writes last_used_at: not kept
    assert world.service.cached_token(secret) is None
    assert world.service.authenticate_token(secret) == account
    assert world.service.cached_token(secret) == account
    world.clock.now += timedelta(days=1)  # the token's own expiry holds in the cache
    assert world.service.cached_token(secret) is None
    world.clock.now -= timedelta(days=1)
    assert world.service.cached_token(secret) == account
    world.service.revoke_token(world.admin, token_id)  # a revocation empties the cache
    assert world.service.cached_token(secret) is None
    with pytest.raises(SignInFailed):
        world.service.authenticate_token(secret)
    _, other = world.service.issue_token(world.admin, name="other")
    world.service.authenticate_token(other)
    world.service.authenticate_token(other)
    elapsed = [0.0]
    world.service.tokens.monotonic = lambda: elapsed[0]
    world.service.tokens.put(
        other, account, world.clock.now + timedelta(days=1), world.service.tokens.generation
    )
    assert world.service.cached_token(other) == account
    elapsed[0] += world.service.tokens.ttl  # what another process changed shows after ttl
    assert world.service.cached_token(other) is None


def test_the_token_cache_outlives_changes_that_cannot_alter_what_a_token_resolves_to(
    world: World,
) -> None:
    _, secret = world.service.issue_token(world.admin, name="cached", days=1)
    world.service.authenticate_token(secret)  # writes last_used_at
    account = world.service.authenticate_token(secret)
    assert world.service.cached_token(secret) == account
    world.service.issue_token(world.admin, name="another")  # a new token: kept
    unit = world.service.create_organization(  # a new organization: kept
        world.admin,
        kind=OrganizationType.APPLICATION_UNIT,
        name="某公司",
        credit_code=credit_code(7),
    )
    assert world.service.cached_token(secret) == account
    user, _ = world.service.create_user(
        world.admin, organization_id=unit.id, username="li", display_name="李"
    )  # a new user: kept
    assert world.service.cached_token(secret) == account
    world.service.grant_role(world.admin, user.id, "applicant")  # a role grant: forgotten
    assert world.service.cached_token(secret) is None
    assert world.service.authenticate_token(secret) == account
    world.service.set_organization_flag(world.admin, unit.id, True, "黑名单")  # a changed row
    assert world.service.cached_token(secret) is None
