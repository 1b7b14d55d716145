"""What bubblewrap is told for each profile, sandbox specs, and sign-on tickets — as data,
without running anything (the escape suite runs the real thing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.runtime.bwrap import Binding, Isolation, Profile, kernel_isolation
from sandbox.runtime.spec import Limits, SandboxError, SandboxSpec, sandbox_name
from sandbox.spawner.ticket import TicketRefused, mint_ticket, verify_ticket

SECRET = b"s" * 32


def spec(**changes: object) -> SandboxSpec:
    values: dict[str, object] = {
        "name": "u200001-abc",
        "uid": 200001,
        "gid": 210001,
        "views": Path("/srv/views/g"),
        "state": Path("/srv/state/u200001-abc"),
        "stage": Path("/run/sbx/u200001-abc"),
        "python": Path("/opt/env"),
    }
    values.update(changes)
    return SandboxSpec(**values)  # type: ignore[arg-type]


def test_a_kernel_has_no_network_and_cannot_make_user_namespaces() -> None:
    command = kernel_isolation(Path("/opt/env"), "/run/sbx/kernels/k1", {"HOME": "/h"}, 1 << 20)
    argv = command.command(["python", "-c", "1"])
    for flag in ("--unshare-net", "--disable-userns", "--unshare-pid", "--unshare-user"):
        assert flag in argv
    assert argv[argv.index("--") + 1 :] == ["python", "-c", "1"]
    assert ["--ro-bind", "/data", "/data"] == argv[
        argv.index("/data") - 1 : argv.index("/data") + 2
    ]
    assert "--clearenv" in argv and argv.index("--clearenv") < argv.index("HOME")
    assert ["--remount-ro", "/"] == argv[
        argv.index("--remount-ro") : argv.index("--remount-ro") + 2
    ]


def test_the_server_shares_the_network_but_nothing_else() -> None:
    isolation = Isolation([Binding(Path("/w"), "/home/jovyan", writable=True)], {}, Profile.SERVER)
    argv = isolation.command(["jupyterhub-singleuser"])
    assert "--unshare-net" not in argv
    assert {"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-user"} <= set(argv)
    assert ["--bind", "/w", "/home/jovyan"] == argv[argv.index("/w") - 1 : argv.index("/w") + 2]


def test_an_empty_command_is_refused() -> None:
    with pytest.raises(SandboxError, match="no command"):
        Isolation([], {}).command([])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"uid": 0}, "never runs as root"),
        ({"gid": 0}, "never runs as root"),
        ({"name": "../etc"}, "is not"),
        ({"name": "A"}, "is not"),
        ({"env": {"bad name": "x"}}, "not allowed"),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SandboxError, match=message):
        spec(**changes)


def test_limits_are_checked_and_a_spec_round_trips() -> None:
    with pytest.raises(SandboxError, match="memory"):
        Limits(memory_bytes=1)
    with pytest.raises(SandboxError, match="processes"):
        Limits(pids=1)
    made = spec(limits=Limits(memory_bytes=128 << 20, pids=32), env={"SBX_GRANT": "g"})
    assert SandboxSpec.from_dict(made.to_dict()) == made
    assert made.workspace == Path("/run/sbx/u200001-abc/workspace")


def test_sandbox_names_differ_by_user_grant_and_kind() -> None:
    names = {sandbox_name(u, g, k) for u in (1, 2) for g in ("a", "b") for k in ("u", "r")}
    assert len(names) == 8
    assert all(len(n) <= 63 for n in names)


def test_a_ticket_admits_its_user_for_its_grant_until_it_expires() -> None:
    ticket = mint_ticket(SECRET, "applicant.wang", "demo-grant", now=1000)
    found = verify_ticket(SECRET, ticket, now=1030)
    assert (found.user, found.grant, found.expires) == ("applicant.wang", "demo-grant", 1060)
    with pytest.raises(TicketRefused, match="expired"):
        verify_ticket(SECRET, ticket, now=1061)
    with pytest.raises(TicketRefused, match="not issued"):
        verify_ticket(b"x" * 32, ticket, now=1030)


def test_a_changed_ticket_is_refused() -> None:
    body, signature = mint_ticket(SECRET, "applicant.wang", "demo-grant", now=1000).split(".")
    forged = body.replace(body[5], "A" if body[5] != "A" else "B") + "." + signature
    with pytest.raises(TicketRefused):
        verify_ticket(SECRET, forged, now=1000)
    for junk in ("", "a", "a.b.c", "x" * 5000, "!!.??"):
        with pytest.raises(TicketRefused, match="malformed|not issued"):
            verify_ticket(SECRET, junk, now=1000)
    with pytest.raises(TicketRefused, match="not valid"):
        mint_ticket(SECRET, "Bad User", "demo-grant")


@pytest.mark.parametrize(("user", "grant"), [("wang\n", "demo-grant"), ("wang", "demo-grant\n")])
def test_a_name_with_a_trailing_newline_is_no_name(user: str, grant: str) -> None:
    with pytest.raises(TicketRefused, match="not valid"):
        mint_ticket(SECRET, user, grant)
