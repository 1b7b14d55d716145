"""The trail index over a real ledger: ingest (incremental, rebuilt when the ledger is
replaced or restored, safe when the writer dies between batches), every filter and the
cursor checked against a plain scan of the ledger, people's names and organizations, and
the history of every kind of object over the entries the platform writes for a grant's
whole life (same actions, same details as the gateway's services)."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from audit import Ledger, LedgerOptions
from gateway.trail import TrailIndex, TrailQuery, TrailQueryError
from gateway.trail.history import family
from gateway.trail.index import split_entry
from gateway.trail.links import detail_subjects
from gateway.trail.search import explain

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000_000
DAY = 24 * HOUR
START = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z


class Clock:
    """The ledger's clock: an hour passes at every commit."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        self.now += HOUR
        return self.now


@dataclass
class World:
    """A platform's ledger, written entry by entry as its services write them."""

    ledger: Ledger
    ids: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)  # label -> seq

    def id(self, name: str) -> str:
        return self.ids.setdefault(name, f"{len(self.ids) + 1:032x}")

    def add(
        self,
        label: str,
        actor: str,
        action: str,
        obj: str,
        detail: dict[str, Any] | None = None,
        outcome: str = "ok",
    ) -> int:
        receipt = self.ledger.append(
            action=action, actor=actor, object=obj, outcome=outcome, detail=detail or {}
        )
        self.seqs[label] = receipt.seq
        return receipt.seq

    def user(self, name: str) -> str:
        return f"user:{self.id(name)}"


def build_world(ledger: Ledger) -> World:
    """Two providers' datasets, an application unit's application, agreement and grant
    with two sessions and an export through release; a second grant on the same dataset
    (a sibling), an objection, a refusal, sign-ins and a suspension."""
    w = World(ledger)
    op, water, acme, authority = (w.id(n) for n in ("operator", "water", "acme", "authority"))
    admin, rev, appr = w.user("admin"), w.user("reviewer"), w.user("approver")
    pei, ann, bob, reg = w.user("pei"), w.user("ann"), w.user("bob"), w.user("reg")
    d1, d2 = w.id("d1"), w.id("d2")
    app, agr, g1, g2 = w.id("app"), w.id("agr"), "clinic-2026", "open-2026"
    s1, s2, s3, e1, e2 = (w.id(n) for n in ("s1", "s2", "s3", "e1", "e2"))
    sha = "ab" * 32
    w.add("policy", "system:gateway", "policy.load", f"policy:{sha}", {"digest": sha})
    w.add(
        "bootstrap",
        "system:gateway",
        "user.bootstrap",
        admin,
        {"organization": op, "roles": ["admin"], "username": "admin"},
    )
    for key, org, kind in (("water", water, "provider"), ("acme", acme, "application_unit")):
        w.add(
            f"{key}.create",
            admin,
            "organization.create",
            f"org:{org}",
            {"credit_code": "91370200MA00000028", "name": key, "type": kind},
        )
    w.add(
        "authority.create",
        admin,
        "organization.create",
        f"org:{authority}",
        {"credit_code": "11370200MB0000003M", "name": "大数据局", "type": "regulator"},
    )
    for name, org, role in (
        ("reviewer", op, "reviewer"),
        ("approver", op, "approver"),
        ("pei", water, "provider_steward"),
        ("ann", acme, "applicant"),
        ("bob", acme, "applicant"),
        ("reg", authority, "regulator"),
    ):
        who = w.user(name)
        w.add(
            f"{name}.create",
            admin,
            "user.create",
            who,
            {"organization": org, "roles": [role], "username": name},
        )
        w.add(f"{name}.password", who, "user.password", who)
    # the datasets, registered, reviewed, approved and uploaded
    for key, dataset in (("d1", d1), ("d2", d2)):
        what = f"dataset:{dataset}"
        w.add(
            f"{key}.register",
            pei,
            "catalog.register",
            what,
            {"entry_sha256": sha, "name": "门诊记录", "reason": "首次登记", "revision": 1},
        )
        w.add(f"{key}.review", rev, "catalog.review", what, {"recommends": True, "revision": 1})
        w.add(
            f"{key}.approve",
            appr,
            "catalog.approve",
            what,
            {"less_open": [], "on_time": True, "reason": "同意发布", "revision": 1},
        )
        w.add(
            f"{key}.store",
            pei,
            "vault.store",
            what,
            {"bytes": 4476544, "sha256": sha, "version": w.id(f"{key}.v1")},
        )
        w.add(
            f"{key}.upload",
            pei,
            "dataset.upload",
            what,
            {"filename": "visits.csv", "rows": 1000, "sha256": sha, "version": w.id(f"{key}.v1")},
        )
    w.add("d1.objection", bob, "objection.create", f"objection:{w.id('obj')}", {"dataset": d1})
    w.add("d1.answer", pei, "objection.answer", f"objection:{w.id('obj')}", {"on_time": True})
    # the sibling: an open grant on d1 without an application (as the demo makes one)
    w.add(
        "g2.budget",
        "system:view-builder",
        "privacy.budget.open",
        f"grant:{g2}",
        {"epsilon_micro": 3000000},
    )
    w.add(
        "g2.view",
        "system:demo",
        "view.build",
        f"grant:{g2}",
        {"dataset": d1, "kind": "aggregate", "view": "by_district", "version": w.id("d1.v1")},
    )
    w.add(
        "g2.create",
        appr,
        "grant.create",
        f"grant:{g2}",
        {"members": [w.id("bob")], "organization": acme, "title": "公开数据", "views": g2},
    )
    # the application through review
    application = f"application:{app}"
    w.add("app.create", ann, "application.create", application)
    w.add(
        "app.attach",
        ann,
        "application.attach",
        application,
        {"kind": "commitment", "sha256": sha, "size": 12104},
    )
    w.add(
        "app.submit",
        ann,
        "application.submit",
        application,
        {"due_on": "2026-12-03", "round": 1, "status": "formal"},
    )
    w.add(
        "app.check",
        rev,
        "application.check",
        application,
        {"on_time": True, "round": 1, "status": "consent"},
    )
    w.add(
        "app.consent",
        pei,
        "application.consent",
        application,
        {"dataset": d1, "on_time": True, "round": 1, "status": "review"},
    )
    w.add(
        "app.review",
        rev,
        "application.review",
        application,
        {"recommends": True, "risk": "medium", "round": 1, "status": "approval"},
    )
    w.add(
        "app.approve",
        appr,
        "application.approve",
        application,
        {"on_time": True, "round": 1, "status": "approved"},
    )
    # the agreement, signed by both parties
    agreement = f"agreement:{agr}"
    w.add(
        "agr.create",
        ann,
        "agreement.create",
        agreement,
        {"application": app, "number": "SBX-2026-00001", "sha256": sha},
    )
    w.add("acme.key", ann, "organization.key", f"org:{acme}", {"key_id": sha, "public_key": "ENgL"})
    w.add(
        "agr.sign.ann",
        ann,
        "agreement.sign",
        agreement,
        {"organization": acme, "party": "applicant", "sha256": sha, "status": "awaiting"},
    )
    w.add(
        "agr.sign.op",
        appr,
        "agreement.sign",
        agreement,
        {"organization": op, "party": "operator", "sha256": sha, "status": "signed"},
    )
    # the grant: its views (d1 and d2), its budget, the grant itself
    grant = f"grant:{g1}"
    for key, dataset in (("d1", d1), ("d2", d2)):
        w.add(
            f"g1.view.{key}",
            appr,
            "view.build",
            grant,
            {"dataset": dataset, "kind": "record", "view": key, "version": w.id(f"{key}.v1")},
        )
    w.add(
        "g1.budget", "system:view-builder", "privacy.budget.open", grant, {"epsilon_micro": 3000000}
    )
    w.add(
        "g1.create",
        appr,
        "grant.create",
        grant,
        {
            "agreement": agr,
            "agreement_sha256": sha,
            "members": [w.id("ann")],
            "organization": acme,
            "title": "门诊资源",
            "views": g1,
        },
    )
    # sign-ins and a refusal (about nobody's grant)
    w.add("ann.login", ann, "session.login", ann, {"client": "10.0.0.8"})
    w.add(
        "bob.refused",
        bob,
        "request.denied",
        "request",
        {
            "action": "audit_trail:read",
            "organization": acme,
            "reason": "your roles do not allow read on audit_trail",
            "status": 403,
        },
        "denied",
    )
    w.add(
        "anon.login",
        "anonymous",
        "session.login",
        "user:unknown",
        {"client": "10.0.0.9", "reason": "unknown user"},
        "failed",
    )
    # two sessions of the grant, one of the sibling; an export through release
    for key, session, member, grant_id in (("s1", s1, ann, g1), ("s3", s3, bob, g2)):
        w.add(
            f"{key}.start",
            member,
            "sandbox.start",
            f"session:{session}",
            {"gid": 210001, "grant": grant_id, "hub_user": "x", "uid": 200000},
        )
        w.add(
            f"{key}.cell",
            member,
            "sandbox.execute",
            f"session:{session}",
            {
                "code": 'print("\\"grant\\":\\"other\\"")',
                "grant": grant_id,
                "kernel": "k",
                "kind": "execute",
                "message": "m1",
                "session": session,
                "sha256": sha,
            },
        )
    w.add(
        "g1.spend",
        "system:view-builder",
        "privacy.spend",
        grant,
        {
            "epsilon_micro": 500000,
            "left_micro": 2500000,
            "purpose": {"queries": ["people"]},
            "spend": w.id("spend"),
        },
    )
    export = f"export:{e1}"
    w.add(
        "e1.request",
        ann,
        "export.request",
        export,
        {
            "files": [{"bytes": 427, "name": "results/t.csv", "sha256": sha}],
            "grant": g1,
            "session": s1,
        },
    )
    w.add(
        "d1.index",
        "system:airlock",
        "airlock.index",
        f"dataset:{d1}",
        {"records": 100000, "version": w.id("d1.v1")},
    )
    w.add(
        "e1.submit",
        ann,
        "export.submit",
        export,
        {"blocking": 0, "grant": g1, "passed": True, "risk": "normal", "status": "review"},
    )
    w.add(
        "s1.stop",
        "system:hub",
        "sandbox.stop",
        f"session:{s1}",
        {"grant": g1, "reason": "idle", "user": w.id("ann")},
    )
    w.add(
        "e1.review",
        rev,
        "export.review",
        export,
        {"approve": True, "reasons": "汇总表", "stage": "review", "status": "approval"},
    )
    w.add(
        "e1.approve",
        appr,
        "export.approve",
        export,
        {"approve": True, "reasons": "同意", "stage": "approval", "status": "released"},
    )
    w.add(
        "e1.release",
        appr,
        "export.release",
        export,
        {
            "files": [{"name": "results/t.csv", "sha256": sha}],
            "grant": g1,
            "manifest_sha256": sha,
            "organization": op,
        },
    )
    w.add(
        "e2.request",
        bob,
        "export.request",
        f"export:{e2}",
        {"files": [], "grant": g2, "session": s3},
    )
    w.add("e1.download", ann, "export.download", export, {"manifest_sha256": sha})
    w.add(
        "s2.start",
        ann,
        "sandbox.start",
        f"session:{s2}",
        {"gid": 210001, "grant": g1, "hub_user": "x", "uid": 200000},
    )
    w.add(
        "s2.cell",
        ann,
        "sandbox.execute",
        f"session:{s2}",
        {
            "code": "1",
            "grant": g1,
            "kernel": "k",
            "kind": "execute",
            "message": "m2",
            "session": s2,
            "sha256": sha,
        },
    )
    w.add("g1.suspend", appr, "grant.suspend", grant, {"reason": "核查", "sessions": 1})
    w.add(
        "s2.stop",
        appr,
        "sandbox.stop",
        f"session:{s2}",
        {"grant": g1, "reason": "the grant is suspended", "user": w.id("ann")},
    )
    w.add(
        "feedback",
        ann,
        "feedback.create",
        f"feedback:{w.id('fb')}",
        {
            "datasets": [{"dataset": d2, "quality": 3}],
            "grant": g1,
            "organization": acme,
            "quality": 4,
        },
    )
    w.add("report", reg, "report.operations", "report:operations", {"format": "pdf"})
    return w


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TrailIndex]]:
    folder = tmp_path_factory.mktemp("trail")
    ledger = Ledger(folder / "ledger", LedgerOptions(clock=Clock()))
    w = build_world(ledger)
    index = TrailIndex(folder / "trail.sqlite3", ledger, batch=7)
    index.catch_up()
    yield w, index
    index.close()
    ledger.close()


def parsed(ledger: Ledger) -> list[dict[str, Any]]:
    return [json.loads(line) for _, line in ledger.entries()]


def seqs_of(entries: Any) -> list[int]:
    return [e.seq for e in entries]


# ---------------------------------------------------------------------- ingest
def test_every_entry_is_indexed_with_its_links(world: tuple[World, TrailIndex]) -> None:
    w, index = world
    assert index.indexed() == w.ledger.size
    with index.read() as conn:
        rows = conn.execute("SELECT seq, time, actor, action, object, outcome, detail FROM entries")
        for (seq, time, actor, action, obj, outcome, detail), value in zip(
            rows, parsed(w.ledger), strict=True
        ):
            assert (seq, time, actor, action, obj, outcome) == (
                value["seq"],
                value["time"],
                value["actor"],
                value["action"],
                value["object"],
                value["outcome"],
            )
            assert json.loads(detail) == value["detail"]
        release = w.seqs["e1.release"]
        linked = {s for (s,) in conn.execute("SELECT subject FROM links WHERE seq = ?", (release,))}
    assert linked == {
        f"export:{w.id('e1')}",
        w.user("approver"),
        f"org:{w.id('operator')}",
        "grant:clinic-2026",
    }


def test_ids_are_read_from_the_canonical_detail_and_never_from_inside_strings() -> None:
    detail = (
        '{"code":"x = \\"grant\\":\\"not-an-id\\"","datasets":[{"dataset":"d9"}],'
        '"members":["u1","with space"],"organization":null,"session":"session:s1"}'
    )
    assert detail_subjects(detail) == ["dataset:d9", "user:u1", "session:s1"]
    text = (
        '{"action":"a.b","actor":"x\\"y","detail":{"k":"},\\"object\\":\\""},"object":"o",'
        '"outcome":"ok","prev":"' + "0" * 64 + '","seq":3,"time":5,"v":1}'
    )
    assert split_entry(text) == ("a.b", 'x"y', '{"k":"},\\"object\\":\\""}', "o", "ok", 5)


def test_ingest_is_incremental_in_batches_and_tells_its_observers(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger", LedgerOptions(clock=Clock()))
    calls: list[tuple[int, int, int]] = []

    def observer(conn: sqlite3.Connection, first: int, stop: int) -> None:
        # inside the batch's transaction: the batch's rows are there already
        count = conn.execute(
            "SELECT count(*) FROM entries WHERE seq >= ? AND seq < ?", (first, stop)
        ).fetchone()[0]
        calls.append((first, stop, count))

    index = TrailIndex(tmp_path / "trail.sqlite3", ledger, [observer], batch=4)
    try:
        for n in range(9):
            ledger.append(action="note.add", actor="system:test", object=f"note:{n}")
        assert index.catch_up() == 10
        assert calls == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
        assert index.catch_up() == 10 and len(calls) == 3  # nothing new: nothing done
        ledger.append(action="note.add", actor="system:test", object="note:9")
        page = index.search(TrailQuery(limit=2))  # a search catches up first
        assert page.indexed == 11 and calls[-1] == (10, 11, 1)
        assert seqs_of(page.entries) == [10, 9] and page.next_before == 9
    finally:
        index.close()
        ledger.close()


def test_a_reader_far_behind_leaves_the_catching_up_to_the_background(tmp_path: Path) -> None:
    ledger = _ledger_with(tmp_path / "ledger", 20)
    go, started = threading.Event(), threading.Event()

    def observer(_: sqlite3.Connection, first: int, stop: int) -> None:
        started.set()
        assert go.wait(10)

    index = TrailIndex(tmp_path / "trail.sqlite3", ledger, [observer], batch=4)
    try:
        page = index.search(TrailQuery())  # 21 entries behind: not in this request
        assert started.wait(10) and page.indexed == 0 and page.entries == []
        assert index.search(TrailQuery()).indexed == 0  # one catch-up at a time
        go.set()
        thread = index.start_catching_up()
        thread.join(10)
        assert index.search(TrailQuery(limit=1)).indexed == 21
    finally:
        go.set()
        index.close()
        ledger.close()


def _ledger_with(path: Path, notes: int) -> Ledger:
    ledger = Ledger(path, LedgerOptions(clock=Clock()))
    ledger.append_many(
        [
            {"action": "note.add", "actor": "system:test", "object": f"note:{n}"}
            for n in range(notes)
        ]
    )
    return ledger


def test_the_index_is_rebuilt_when_the_ledger_is_replaced_or_restored(tmp_path: Path) -> None:
    starts: list[int] = []
    path = tmp_path / "trail.sqlite3"

    def observer(_: sqlite3.Connection, first: int, stop: int) -> None:
        starts.append(first)

    def indexed(ledger: Ledger) -> list[str]:
        index = TrailIndex(path, ledger, [observer])
        try:
            index.catch_up()
            with index.read() as conn:
                return [o for (o,) in conn.execute("SELECT object FROM entries WHERE seq > 0")]
        finally:
            index.close()

    folder = tmp_path / "ledger"
    ledger = _ledger_with(folder, 5)
    ledger.close()
    shutil.copytree(folder, tmp_path / "backup")
    ledger = Ledger(folder, LedgerOptions(clock=Clock()))
    ledger.append(action="note.add", actor="system:test", object="note:later")
    ledger.close()
    assert indexed(Ledger(folder))[-1] == "note:later" and starts == [0]
    # restored from the older copy: the last indexed entry is gone
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "backup", folder)
    assert indexed(Ledger(folder))[-1] == "note:4" and starts == [0, 0]
    # a different ledger of the same length and the same entries (another id)
    shutil.rmtree(folder)
    _ledger_with(folder, 5).close()
    assert indexed(Ledger(folder)) == [f"note:{n}" for n in range(5)] and starts == [0, 0, 0]
    # the same ledger again: nothing to do
    assert indexed(Ledger(folder)) == [f"note:{n}" for n in range(5)] and starts == [0, 0, 0]


def test_the_same_ledger_with_a_different_last_entry_is_indexed_again(tmp_path: Path) -> None:
    folder = tmp_path / "ledger"
    ledger = _ledger_with(folder, 3)
    ledger.close()
    index = TrailIndex(tmp_path / "trail.sqlite3", Ledger(folder))
    index.catch_up()
    index.close()
    with sqlite3.connect(tmp_path / "trail.sqlite3") as conn:  # as if another entry 3
        conn.execute("UPDATE state SET value = ? WHERE key = 'last_hash'", ("00" * 32,))
        conn.execute("UPDATE entries SET object = 'note:forged' WHERE seq = 3")
    index = TrailIndex(tmp_path / "trail.sqlite3", Ledger(folder))
    try:
        assert index.catch_up() == 4
        with index.read() as conn:
            assert conn.execute("SELECT object FROM entries WHERE seq = 3").fetchone() == (
                "note:2",
            )
    finally:
        index.close()


CRASH = """
import os, sys
from pathlib import Path
from audit import Ledger
from gateway.trail import TrailIndex

def observer(conn, first, stop):
    if first >= 4:
        os._exit(3)  # the process dies inside the second batch's transaction

index = TrailIndex(Path(sys.argv[1]), Ledger(sys.argv[2]), [observer], batch=4)
index.catch_up()
"""


def test_a_writer_that_dies_between_batches_leaves_whole_batches(tmp_path: Path) -> None:
    folder = tmp_path / "ledger"
    _ledger_with(folder, 9).close()
    path = tmp_path / "trail.sqlite3"
    died = subprocess.run(
        [sys.executable, "-c", CRASH, str(path), str(folder)], cwd=ROOT, check=False
    )
    assert died.returncode == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM entries").fetchone() == (4, 3)
        assert conn.execute("SELECT value FROM state WHERE key = 'size'").fetchone() == (4,)
    index = TrailIndex(path, Ledger(folder))
    try:
        assert index.catch_up() == 10
        with index.read() as conn:
            assert [s for (s,) in conn.execute("SELECT seq FROM entries")] == list(range(10))
            assert conn.execute(
                "SELECT count(*) FROM links WHERE subject = 'system:test'"
            ).fetchone() == (9,)
    finally:
        index.close()


# ---------------------------------------------------------------------- searching
def brute_force(
    entries: list[dict[str, Any]], query: TrailQuery, links: dict[int, set[str]]
) -> list[int]:
    """The answer by reading every entry of the ledger."""
    found = []
    for e in entries:
        if query.since is not None and e["time"] < query.since:
            continue
        if query.until is not None and e["time"] >= query.until:
            continue
        if query.actor is not None and e["actor"] != query.actor:
            continue
        if query.action is not None and not (
            e["action"].startswith(query.action)
            if query.action.endswith(".")
            else e["action"] == query.action
        ):
            continue
        if query.outcome is not None and e["outcome"] != query.outcome:
            continue
        if query.subject is not None and query.subject not in links[e["seq"]]:
            continue
        if query.organization is not None and f"org:{query.organization}" not in links[e["seq"]]:
            continue
        found.append(e["seq"])
    return found[::-1]


def test_every_filter_combination_pages_through_exactly_what_a_scan_finds(
    world: tuple[World, TrailIndex],
) -> None:
    w, index = world
    entries = parsed(w.ledger)
    with index.read() as conn:
        links: dict[int, set[str]] = {}
        for subject, seq in conn.execute("SELECT subject, seq FROM links"):
            links.setdefault(seq, set()).add(subject)
    times = [e["time"] for e in entries]
    options: dict[str, list[Any]] = {
        "actor": [None, w.user("ann"), "system:view-builder", "user:nobody"],
        "organization": [None, w.id("acme"), w.id("operator")],
        "subject": [None, "grant:clinic-2026", f"dataset:{w.id('d1')}"],
        "action": [None, "export.", "sandbox.execute", "application.", "grant.suspend"],
        "outcome": [None, "ok", "denied"],
        "window": [(None, None), (times[20], None), (times[10], times[60])],
    }
    checked = 0
    for actor, organization, subject, action, outcome, (since, until) in itertools.product(
        *options.values()
    ):
        query = TrailQuery(
            since=since,
            until=until,
            actor=actor,
            organization=organization,
            subject=subject,
            action=action,
            outcome=outcome,
            limit=2,
        )
        expected = brute_force(entries, query, links)
        got: list[int] = []
        before = None
        for _ in range(100):
            page = index.search(TrailQuery(**{**vars(query), "before": before}))
            got += seqs_of(page.entries)
            before = page.next_before
            if before is None:
                break
        assert got == expected, query
        checked += bool(expected)
    assert checked > 100  # most combinations match something


def test_each_filter_drives_through_its_own_index(world: tuple[World, TrailIndex]) -> None:
    w, index = world
    with index.read() as conn:
        assert explain(conn, TrailQuery(action="grant.suspend"))[0] == "action"
        assert explain(conn, TrailQuery(outcome="failed"))[0] == "outcome"
        driver, plan = explain(conn, TrailQuery(actor=w.user("reg")))
        assert driver == "actor" and "entries_actor" in plan[0]
        driver, plan = explain(conn, TrailQuery(subject=f"objection:{w.id('obj')}"))
        assert driver == "link" and "PRIMARY KEY (subject=?" in plan[0]
        assert explain(conn, TrailQuery())[0] == "seq"
        assert explain(conn, TrailQuery(actor="user:nobody", action="export."))[0] == "none"
        assert all("TEMP B-TREE" not in step for step in plan)  # streamed in seq order


def test_people_have_their_names_and_organizations(world: tuple[World, TrailIndex]) -> None:
    w, index = world
    page = index.search(TrailQuery(limit=500))
    by_seq = {e.seq: e for e in page.entries}
    ann = by_seq[w.seqs["app.create"]]
    assert (ann.actor_name, ann.organization) == ("ann", w.id("acme"))
    release = by_seq[w.seqs["e1.release"]]
    assert (release.actor_name, release.organization) == ("approver", w.id("operator"))
    admin = by_seq[w.seqs["water.create"]]
    assert (admin.actor_name, admin.organization) == ("admin", w.id("operator"))
    for label in ("g1.budget", "anon.login", "s1.stop"):
        assert (by_seq[w.seqs[label]].actor_name, by_seq[w.seqs[label]].organization) == (
            None,
            None,
        )
    assert release.detail["grant"] == "clinic-2026" and release.time > 0
    by_org = index.search(TrailQuery(organization=w.id("authority"), limit=500))
    assert seqs_of(by_org.entries) == sorted(
        (w.seqs[k] for k in ("report", "reg.password", "reg.create", "authority.create")),
        reverse=True,
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"since": 5, "until": 4}, "since is after until"),
        ({"before": -1}, "before"),
        ({"action": "export..approve"}, "action"),
        ({"action": "export approve"}, "action"),
        ({"subject": "grant"}, "subject"),
        ({"subject": "grant:a b"}, "subject"),
        ({"organization": "org x"}, "organization"),
        ({"actor": ""}, "actor"),
        ({"outcome": "x" * 300}, "outcome"),
    ],
)
def test_a_query_that_cannot_be_right_says_why(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(TrailQueryError, match=reason):
        TrailQuery(**fields)


# ---------------------------------------------------------------------- histories
def labels(w: World, entries: Any) -> list[str]:
    names = {seq: label for label, seq in w.seqs.items()}
    return [names[e.seq] for e in entries]


GRANT_HISTORY = [
    # its datasets' own entries (not the objection, not the sibling grant's view)
    *(f"{d}.{step}" for d in ("d1", "d2") for step in ("register", "review", "approve",
                                                        "store", "upload")),
    # the application (without another's consent), the agreement and its signatures
    "app.create", "app.attach", "app.submit", "app.check", "app.consent", "app.review",
    "app.approve", "agr.create", "agr.sign.ann", "agr.sign.op",
    # the grant, its views and budget, its sessions and cells, its export to download
    "g1.view.d1", "g1.view.d2", "g1.budget", "g1.create", "s1.start", "s1.cell", "g1.spend",
    "e1.request", "d1.index", "e1.submit", "s1.stop", "e1.review", "e1.approve",
    "e1.release", "e1.download", "s2.start", "s2.cell", "g1.suspend", "s2.stop", "feedback",
]  # fmt: skip


def test_a_grants_history_is_its_whole_life_and_nothing_of_its_siblings(
    world: tuple[World, TrailIndex],
) -> None:
    w, index = world
    history = index.history("grant:clinic-2026")
    assert labels(w, history) == GRANT_HISTORY
    assert seqs_of(history) == sorted(seqs_of(history))
    # paged: the same, a piece at a time
    first = index.history("grant:clinic-2026", limit=10)
    rest = index.history("grant:clinic-2026", after=first[-1].seq)
    assert seqs_of(first + rest) == seqs_of(history)


DATASET = ["register", "review", "approve", "store", "upload"]
ABOVE_THE_GRANT = [  # what a grant's descendants inherit from it and above it
    *(f"d1.{step}" for step in DATASET), *(f"d2.{step}" for step in DATASET),
    *GRANT_HISTORY[10:24],
]  # fmt: skip


def test_the_history_of_every_kind_of_object(world: tuple[World, TrailIndex]) -> None:
    w, index = world

    def history(subject: str) -> list[str]:
        return labels(w, index.history(subject))

    # a dataset: its own life, its objection, and everything built on it (both grants);
    # a grant's entry naming its other dataset is the grant's, the other dataset's own
    # entries are not
    assert history(f"dataset:{w.id('d1')}") == [
        *(f"d1.{step}" for step in DATASET), "d1.objection", "d1.answer", "g2.budget",
        "g2.view", "g2.create", *GRANT_HISTORY[10:26], "s3.start", "s3.cell",
        *GRANT_HISTORY[26:34], "e2.request", *GRANT_HISTORY[34:],
    ]  # fmt: skip
    assert history(f"dataset:{w.id('d2')}") == [
        *(f"d2.{step}" for step in DATASET),
        *GRANT_HISTORY[20:28],
        *GRANT_HISTORY[29:],
    ]
    assert history("grant:open-2026") == [
        *(f"d1.{step}" for step in DATASET), "g2.budget", "g2.view", "g2.create",
        "s3.start", "s3.cell", "d1.index", "e2.request",
    ]  # fmt: skip
    # an export: what it stands on, its session's cells, its own steps; not the other
    # session, not the other grant's export
    assert history(f"export:{w.id('e1')}") == [
        *ABOVE_THE_GRANT, "s1.start", "s1.cell", "g1.spend", "e1.request", "d1.index",
        "e1.submit", "s1.stop", "e1.review", "e1.approve", "e1.release", "e1.download",
        "g1.suspend",
    ]  # fmt: skip
    assert history(f"session:{w.id('s2')}") == [
        *ABOVE_THE_GRANT,
        "g1.spend",
        "d1.index",
        "s2.start",
        "s2.cell",
        "g1.suspend",
        "s2.stop",
    ]
    below_the_application = [*GRANT_HISTORY[:5], *GRANT_HISTORY[10:]]
    assert history(f"application:{w.id('app')}") == below_the_application
    assert history(f"agreement:{w.id('agr')}") == below_the_application
    assert history(f"objection:{w.id('obj')}") == [
        *(f"d1.{step}" for step in DATASET),
        "d1.objection",
        "d1.answer",
        "d1.index",
    ]
    # a person: what they did and what was done to them
    assert history(w.user("pei")) == [
        "pei.create", "pei.password", "d1.register", "d1.store", "d1.upload",
        "d2.register", "d2.store", "d2.upload", "d1.answer", "app.consent",
    ]  # fmt: skip
    # an organization: what its people did and what was done about it
    assert history(f"org:{w.id('authority')}") == [
        "authority.create",
        "reg.create",
        "reg.password",
        "report",
    ]
    assert index.history("grant:nothing-like-it") == []
    with index.read() as conn:
        assert family(conn, f"export:{w.id('e1')}") == {
            f"export:{w.id('e1')}", f"session:{w.id('s1')}", "grant:clinic-2026",
            f"agreement:{w.id('agr')}", f"application:{w.id('app')}",
            f"dataset:{w.id('d1')}", f"dataset:{w.id('d2')}",
        }  # fmt: skip
