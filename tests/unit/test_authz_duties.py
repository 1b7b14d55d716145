"""Separation of duties, as a matrix of role x action, and the recording of policy loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from audit import Ledger
from audit.entry import parse
from gateway.authz import Actor, Authorizer, Denied, Grant, PolicyError, Target
from tests.conftest import REPO_ROOT

OPERATOR, ACME, WATER, AUTHORITY = "org:operator", "org:acme", "org:water", "org:authority"
HOME = {
    "applicant": ACME,
    "provider_steward": WATER,
    "reviewer": OPERATOR,
    "approver": OPERATOR,
    "regulator": AUTHORITY,
    "admin": OPERATOR,
}
ROLES = list(HOME)

# What each role may do to another organization's request that someone else drafted an
# opinion on: the policy and the duties together. Read a row as "a <role> may ...".
# A: allowed; -: refused.
MATRIX = """
action               applicant provider_steward reviewer approver regulator admin
catalog:read             A            A            A        A         A       -
catalog:create           -            A            -        -         -       -
catalog:review           -            -            A        -         -       -
catalog:approve          -            -            -        A         -       -
dataset:upload           -            A            -        -         -       -
view:read                A            -            -        -         -       -
application:create       A            -            -        -         -       -
application:submit       A            -            -        -         -       -
application:consent      -            A            -        -         -       -
application:check        -            -            A        -         -       -
application:review       -            -            A        -         -       -
application:approve      -            -            -        A         -       -
application:read         A            A            A        A         A       -
agreement:sign           A            -            -        A         -       -
grant:suspend            -            -            -        A         -       -
export:create            A            -            -        -         -       -
export:review            -            -            A        -         -       -
export:approve           -            -            -        A         -       -
audit_trail:read         -            -            -        -         A       A
evidence:create          -            -            -        -         A       -
organization:create      -            -            -        -         -       A
organization:read        A            A            A        A         A       A
organization:read_any    -            -            -        -         A       A
organization:update      -            -            -        -         -       A
organization:suspend     -            -            -        -         -       A
user:create              -            -            -        -         -       A
user:read                A            A            A        A         A       A
user:read_any            -            -            -        -         A       A
user:lock                -            -            -        -         -       A
user:reset_password      -            -            -        -         -       A
role:grant               -            -            -        -         -       A
role:revoke              -            -            -        -         -       A
policy:reload            -            -            -        -         -       A
api_token:manage         A            A            A        A         A       A
"""


def matrix() -> list[tuple[str, str, bool]]:
    header, *rows = [line.split() for line in MATRIX.strip().splitlines()]
    assert header[1:] == ROLES
    return [
        (role, row[0], mark == "A")
        for row in rows
        for role, mark in zip(ROLES, row[1:], strict=True)
    ]


def authorizer(folder: Path = REPO_ROOT / "policies") -> tuple[Authorizer, list[dict[str, Any]]]:
    recorded: list[dict[str, Any]] = []
    authz = Authorizer(folder, recorded.append)
    authz.set_grants(Grant(f"user:{role}", role, HOME[role]) for role in ROLES)
    return authz, recorded


def actor(role: str, *, organization: str | None = None) -> Actor:
    return Actor(f"user:{role}", organization or HOME[role], frozenset({role}))


OTHERS_REQUEST = Target(
    organization="org:other", requested_by="user:x", drafted_by=frozenset({"user:y"})
)


@pytest.mark.parametrize(("role", "action", "allowed"), matrix())
def test_role_by_action(role: str, action: str, allowed: bool) -> None:
    authz, _ = authorizer()
    obj, act = action.split(":")
    assert authz.allows(actor(role), obj, act, OTHERS_REQUEST) is allowed


def test_the_matrix_covers_every_role_and_every_duty_bound_action() -> None:
    authz, _ = authorizer()
    duties = authz._snapshot.files.duties  # noqa: SLF001 - what the policy classifies
    covered = {action for _, action, _ in matrix()}
    bound = duties.decisions | duties.reviews | duties.data_content
    assert bound <= covered


@pytest.mark.parametrize("action", ["application:approve", "export:approve", "catalog:approve"])
def test_nobody_decides_on_what_they_drafted_or_requested(action: str) -> None:
    authz, _ = authorizer()
    obj, act = action.split(":")
    approver = actor("approver")
    drafted = Target(
        organization="org:other", requested_by="user:x", drafted_by=frozenset({approver.user})
    )
    requested = Target(
        organization="org:other", requested_by=approver.user, drafted_by=frozenset({"user:y"})
    )
    no_opinion = Target(organization="org:other", requested_by="user:x")
    assert "drafted" in (authz.refusal(approver, obj, act, drafted) or "")
    assert "requested" in (authz.refusal(approver, obj, act, requested) or "")
    assert "another person" in (authz.refusal(approver, obj, act, no_opinion) or "")
    with pytest.raises(Denied, match="drafted"):
        authz.authorize(approver, obj, act, drafted)
    authz.authorize(approver, obj, act, OTHERS_REQUEST)


@pytest.mark.parametrize(
    ("role", "action"),
    [
        ("reviewer", "application:review"),
        ("reviewer", "export:review"),
        ("approver", "export:approve"),
    ],
)
def test_nobody_reviews_or_decides_on_their_own_organizations_request(
    role: str, action: str
) -> None:
    authz, _ = authorizer()
    obj, act = action.split(":")
    own = Target(organization=HOME[role], requested_by="user:x", drafted_by=frozenset({"user:y"}))
    assert "own organization" in (authz.refusal(actor(role), obj, act, own) or "")


def test_an_admin_holding_another_role_still_never_decides_or_touches_data() -> None:
    authz, _ = authorizer()
    authz.set_grants(
        [Grant("user:both", "admin", OPERATOR), Grant("user:both", "approver", OPERATOR)]
    )
    both = Actor("user:both", OPERATOR, frozenset({"admin", "approver"}))
    assert authz.roles_of("user:both", OPERATOR) == {"admin", "approver"}
    for obj, act in (("application", "approve"), ("export", "approve"), ("view", "read")):
        assert not authz.allows(both, obj, act, OTHERS_REQUEST)
    assert authz.allows(
        both, "grant", "suspend", OTHERS_REQUEST
    )  # approver work that is no decision on data


def test_roles_granted_in_one_organization_do_not_act_for_another() -> None:
    authz, _ = authorizer()
    elsewhere = actor("approver", organization="org:acme")
    assert authz.refusal(elsewhere, "application", "approve", OTHERS_REQUEST) == (
        "your roles do not allow approve on application"
    )


# ------------------------------------------------------------------ loading the policy


def copy_policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", folder)
    return folder


def test_every_load_is_recorded_in_the_ledger_before_it_takes_effect(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    with Ledger(tmp_path / "ledger") as ledger:
        authz = Authorizer(folder, lambda fields: ledger.append(**fields), actor="user:adm")
        first = authz.digest
        assert authz.reload(actor="user:adm") is False  # unchanged: nothing to record
        with open(folder / "policy.csv", "a") as handle:
            handle.write("p, role:regulator, *, alert, mute, allow\n")
        assert authz.reload(actor="user:adm") is True
        entries = [parse(line) for _, line in ledger.entries(1)]
    assert [e["action"] for e in entries] == ["policy.load", "policy.load"]
    assert entries[0]["detail"]["previous"] is None
    assert entries[1]["detail"]["previous"] == first
    assert entries[1]["detail"]["digest"] == authz.digest != first
    assert entries[1]["actor"] == "user:adm"
    assert set(entries[1]["detail"]["files"]) == {"model.conf", "policy.csv", "duties.toml"}
    regulator = Actor("user:r", AUTHORITY, frozenset({"regulator"}))
    authz.set_grants([Grant("user:r", "regulator", AUTHORITY)])
    assert authz.allows(regulator, "alert", "mute")


def test_a_policy_that_cannot_be_recorded_does_not_take_effect(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    recorded: list[dict[str, Any]] = []
    fail = {"now": False}

    def record(fields: dict[str, Any]) -> None:
        if fail["now"]:
            raise OSError("disk full")
        recorded.append(fields)

    authz = Authorizer(folder, record)
    before = authz.digest
    (folder / "policy.csv").write_text("p, role:admin, *, view, read, allow\n")
    fail["now"] = True
    with pytest.raises(OSError, match="disk full"):
        authz.reload(actor="user:adm")
    assert authz.digest == before  # fail closed: the old policy stays in force


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("p, role:admin, *, view, read, maybe", "effect must be allow or deny"),
        ("p, role:janitor, *, view, read, allow", "not a role named in duties.toml"),
        ("p, user:ann, *, view, read, allow", "not a role named in duties.toml"),
        ("q, role:admin, *, view, read, allow", "expected 'p, role, domain"),
        ("p, role:admin, *, view, read", "expected 'p, role, domain"),
        ("p, role:admin, *, , read, allow", "empty field"),
        ("p, role:admin, *, view:x, read, allow", "may not contain ':'"),
        ("p, role:admin, *, user, create, allow", "repeats line"),
    ],
)
def test_malformed_policy_lines_are_refused_and_the_old_policy_stays(
    tmp_path: Path, line: str, message: str
) -> None:
    folder = copy_policies(tmp_path)
    authz, recorded = authorizer(folder)
    before = (authz.digest, len(recorded))
    with open(folder / "policy.csv", "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(PolicyError, match=message) as refused:
        authz.reload(actor="user:adm")
    assert "policy.csv:" in str(refused.value)  # names the file and line
    assert (authz.digest, len(recorded)) == before


def test_a_missing_or_broken_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "duties.toml").write_text("decisions = [1, 2]\n")
    with pytest.raises(PolicyError, match="must be a list of non-empty strings"):
        Authorizer(folder, lambda fields: None)
    (folder / "duties.toml").unlink()
    with pytest.raises(PolicyError, match="duties.toml: cannot be read"):
        Authorizer(folder, lambda fields: None)


def test_grants_of_roles_the_policy_does_not_know_are_refused() -> None:
    authz, _ = authorizer()
    with pytest.raises(PolicyError, match="janitor"):
        authz.set_grants([Grant("user:x", "janitor", ACME)])
