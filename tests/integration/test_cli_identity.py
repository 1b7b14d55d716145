"""`sbx org …` and `sbx user …` through the real CLI, database (SQLite) and ledger: what
they change, what the ledger says about who changed it, and how bad input ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from audit import Ledger
from audit.entry import parse
from gateway.api import open_services
from gateway.api.deps import Services
from gateway.cli import app
from gateway.cli.identity import os_user
from gateway.identity.model import SignInFailed
from gateway.settings import load_settings
from tests.integration.test_identity import credit_code

runner = CliRunner()
ACME, WATER = credit_code(2), credit_code(3)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def sbx(data_dir: Path, *args: str) -> Result:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is a bug: let the test show it
    return Result(result.exit_code, result.stdout, result.stderr)


def ok(data_dir: Path, *args: str) -> Result:
    result = sbx(data_dir, *args)
    assert result.code == 0, result.err
    return result


def one_time_password(result: Result, username: str) -> str:
    return result.out.split(f"one-time password of {username}: ")[1].split()[0]


def entries(data_dir: Path) -> list[dict[str, Any]]:
    with Ledger(data_dir / "ledger") as ledger:
        return [parse(line) for _, line in ledger.entries(1)]


@contextmanager
def services_of(data_dir: Path) -> Iterator[Services]:
    services = open_services(load_settings(data_dir=data_dir))
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A deployment with Acme (an application unit, with Ann) and Water (a provider)."""
    data = tmp_path / "var"
    ok(
        data,
        "org",
        "create",
        "--type",
        "application_unit",
        "--name",
        "Acme 数据",
        "--credit-code",
        ACME,
    )
    ok(data, "org", "create", "--type", "provider", "--name", "Water", "--credit-code", WATER)
    ok(data, "user", "create", "ann", "--org", ACME, "--role", "applicant", "--name", "李安")
    return data


def test_the_shell_creates_lists_and_shows_as_a_recorded_operator(data_dir: Path) -> None:
    made = ok(data_dir, "user", "create", "bob", "--org", ACME, "--role", "applicant")
    assert "created user bob" in made.out
    password = one_time_password(made, "bob")
    with services_of(data_dir) as services:
        assert services.identity.authenticate("bob", password).must_change_password

    organizations = ok(data_dir, "org", "list", "--json").json()
    assert [o["name"] for o in organizations["items"]] == ["Acme 数据", "Water"]
    assert organizations["total"] == 2
    providers = ok(data_dir, "org", "list", "--type", "provider", "--json").json()
    assert [o["credit_code"] for o in providers["items"]] == [WATER]
    found = ok(data_dir, "org", "list", "--search", "数据", "--json").json()
    assert [o["credit_code"] for o in found["items"]] == [ACME]
    acme = ok(data_dir, "org", "show", ACME, "--json").json()
    assert (acme["type"], acme["verification"]) == ("application_unit", "unverified")
    assert [m["username"] for m in acme["members"]["items"]] == ["ann", "bob"]
    assert ok(data_dir, "org", "show", acme["id"], "--json").json()["name"] == "Acme 数据"
    ann = ok(data_dir, "user", "show", "ANN", "--json").json()
    assert (ann["display_name"], ann["roles"], ann["status"]) == ("李安", ["applicant"], "active")
    assert ok(data_dir, "user", "show", ann["id"], "--json").json()["username"] == "ann"
    users = ok(data_dir, "user", "list", "--org", acme["id"], "--limit", "1", "--json").json()
    assert ([u["username"] for u in users["items"]], users["total"]) == (["ann"], 2)
    table = ok(data_dir, "org", "list").out
    assert "Acme 数据" in table and "(1–2 of 2)" in table

    log = (data_dir / "ledger" / "segments" / f"{0:020d}.log").read_text()
    assert password not in log  # shown once, never recorded
    recorded = entries(data_dir)
    changes = [e for e in recorded if e["action"] in ("organization.create", "user.create")]
    assert len(changes) == 4
    assert {e["actor"] for e in changes} == {"system:cli"}
    assert len({e["detail"]["request"]["id"] for e in changes}) == 4  # one id per command
    assert {e["detail"]["request"]["client"] for e in changes} == {f"shell:{os_user()}"}
    paths = {e["detail"]["request"]["path"] for e in changes}
    assert paths == {"sbx org create", "sbx user create"}
    taken = [e for e in recorded if e["action"] == "session.shell"]
    assert {(e["actor"], e["detail"]["os_user"]) for e in taken} == {("system:cli", os_user())}
    assert all(e["detail"]["roles"] == ["admin"] for e in taken)


def test_administration_commands_change_state_and_record_their_reasons(data_dir: Path) -> None:
    steps = [
        ("org", "verify", ACME, "--reason", "licence seen"),
        ("org", "verify", ACME, "--reject", "--reason", "licence expired"),
        ("org", "flag", WATER, "--reason", "court list"),
        ("org", "unflag", WATER, "--reason", "appeal won"),
        ("org", "suspend", ACME, "--reason", "R19"),
        ("org", "activate", ACME, "--reason", "remedied"),
        ("user", "disable", "ann", "--reason", "left"),
        ("user", "enable", "ann", "--reason", "back"),
        ("user", "grant", "ann", "applicant"),
    ]
    outputs = [ok(data_dir, *step).out for step in steps[:-1]]
    assert outputs[:2] == ["Acme 数据 is now verified\n", "Acme 数据 is now rejected\n"]
    assert "Water is on the dishonesty" in outputs[2] and "is off" in outputs[3]
    assert sbx(data_dir, *steps[-1]).code == 1  # Ann holds the role already
    ok(data_dir, "user", "revoke", "ann", "applicant")
    ok(data_dir, "user", "grant", "ann", "applicant")
    acme = ok(data_dir, "org", "show", ACME, "--json").json()
    assert (acme["verification"], acme["status"]) == ("rejected", "active")
    changes = [
        (e["action"], e["detail"].get("reason"))
        for e in entries(data_dir)
        if e["actor"] == "system:cli" and e["action"].split(".")[0] in ("organization", "user")
    ]
    assert changes[3:] == [
        ("organization.verification", "licence seen"),
        ("organization.verification", "licence expired"),
        ("organization.flag", "court list"),
        ("organization.flag", "appeal won"),
        ("organization.status", "R19"),
        ("organization.status", "remedied"),
        ("user.status", "left"),
        ("user.status", "back"),
    ]
    roles = [(e["action"], e["detail"]["role"]) for e in entries(data_dir) if "role" in e["action"]]
    assert roles == [("role.revoke", "applicant"), ("role.grant", "applicant")]


def test_the_shell_lets_a_locked_out_administrator_back_in(data_dir: Path) -> None:
    operator = credit_code(1)
    ok(data_dir, "org", "create", "--type", "operator", "--name", "运营", "--credit-code", operator)
    made = ok(data_dir, "user", "create", "admin", "--org", operator, "--role", "admin")
    password = one_time_password(made, "admin")
    with services_of(data_dir) as services:
        admin = services.identity.authenticate("admin", password)
        for _ in range(5):
            with pytest.raises(SignInFailed):
                services.identity.authenticate("admin", "guess")
        with pytest.raises(SignInFailed):
            services.identity.authenticate("admin", password)
    shown = ok(data_dir, "user", "show", "admin", "--json").json()
    assert shown["failed_logins"] == 5 and shown["locked_until"] is not None
    assert ok(data_dir, "user", "unlock", "admin").out == "admin is unlocked\n"
    reset = ok(data_dir, "user", "reset-password", "admin", "--reason", "lost")
    fresh = one_time_password(reset, "admin")
    with services_of(data_dir) as services:
        assert services.identity.authenticate("admin", fresh).id == admin.id
        with pytest.raises(SignInFailed):
            services.identity.authenticate("admin", password)
    # ...but the shell does not leave the platform without an active administrator.
    refused = sbx(data_dir, "user", "disable", "admin", "--reason", "gone")
    assert refused.code == 1
    assert "without an active administrator" in refused.err
    assert fresh not in (data_dir / "ledger" / "segments" / f"{0:020d}.log").read_text()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("org", "create", "--type", "bank", "--name", "x", "--credit-code", ACME), 2, "bank"),
        (
            (
                "org",
                "create",
                "--type",
                "provider",
                "--name",
                "x",
                "--credit-code",
                ACME[:-1] + "0",
            ),
            2,
            "check character",
        ),
        (
            ("org", "create", "--type", "provider", "--name", " ", "--credit-code", credit_code(9)),
            2,
            "name",
        ),
        (
            ("org", "create", "--type", "provider", "--name", "x", "--credit-code", ACME),
            1,
            "exists",
        ),
        (("org", "show", "f" * 32), 1, "no organization"),
        (("org", "show", credit_code(8)), 1, "no organization with credit code"),
        (("org", "suspend", ACME), 2, "--reason"),
        (("org", "flag", ACME, "--reason", "  "), 2, "a reason is needed"),
        (("org", "list", "--limit", "0"), 2, "--limit"),
        (("org", "list", "--status", "gone"), 2, "gone"),
        (("user", "create", "a b", "--org", ACME), 2, "letters and digits"),
        (("user", "create", "zoe", "--org", "nowhere"), 1, "no organization nowhere"),
        (("user", "create", "ann", "--org", ACME), 1, "taken"),
        (("user", "grant", "ann", "approver"), 2, "cannot hold the role approver"),
        (("user", "revoke", "ann", "approver"), 1, "does not hold"),
        (("user", "show", "nobody"), 1, "no user nobody"),
        (("user", "unlock", "nobody"), 1, "no user nobody"),
        (("user", "disable", "ann", "--reason", "a\x07b"), 2, "control characters"),
    ],
)
def test_bad_input_ends_with_a_message_and_an_exit_code(
    data_dir: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    before = len(entries(data_dir))
    result = sbx(data_dir, *args)
    assert result.code == code and message in result.err
    assert "Traceback" not in result.err + result.out
    recorded = entries(data_dir)[before:]
    assert {e["action"] for e in recorded} <= {"policy.load", "session.shell"}  # no change
