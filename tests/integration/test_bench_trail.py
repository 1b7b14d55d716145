"""The trail benchmark on a small ledger: the simulated platform writes what the gateway
writes, and every kind of query the benchmark times finds what its baseline finds."""

from __future__ import annotations

import itertools
from pathlib import Path

from bench.trail import index_ledger, measure_queries, write_platform_ledger
from bench.trail_platform import platform_entries

ENTRIES = 9_000  # past the simulated platform's set-up, into its sessions and exports


def test_the_simulated_platform_is_the_same_every_time_and_busy_like_the_real_one() -> None:
    first = list(itertools.islice(platform_entries(), ENTRIES))
    assert first == list(itertools.islice(platform_entries(), ENTRIES))
    actions = {e["action"] for e in first}
    assert {
        "user.create",
        "catalog.register",
        "dataset.upload",
        "application.consent",
        "agreement.sign",
        "view.build",
        "grant.create",
        "sandbox.execute",
        "export.release",
        "request.denied",
    } <= actions
    executed = sum(e["action"] == "sandbox.execute" for e in first[6000:])
    assert executed > 1000  # once set up, most entries are executed cells
    outcomes = {e["outcome"] for e in first}
    assert {"ok", "denied", "failed", "refused"} <= outcomes


def test_every_query_kind_finds_what_its_baseline_finds(tmp_path: Path) -> None:
    folder, path = tmp_path / "ledger", tmp_path / "trail.sqlite3"
    write_platform_ledger(folder, ENTRIES)
    built = index_ledger(folder, path, progress=False)
    assert built["entries"] == ENTRIES and built["rate"] > 0 and built["bytes"] > 0
    measured = measure_queries(folder, path, samples=1)
    assert len(measured) == 14
    for kind in measured:
        assert len(kind["cold"]) == 1 and len(kind["warm"]) >= 1
        base_seconds, base_found = kind["baseline"]
        if kind["plan"][0] == "history":
            # the history leaves out what belongs to another branch of the family
            assert 0 < kind["found"][0] <= base_found, kind
        else:
            assert kind["found"][0] == base_found, kind
    drivers = {kind["plan"][0] for kind in measured}
    assert {"seq", "actor", "action", "outcome", "link", "history"} <= drivers
