"""The HTTP benchmark's machinery, in a tiny configuration: real servers in child
processes, real load on loopback, and the gateway's ledger checked afterwards."""

from __future__ import annotations

from pathlib import Path

from bench.http import LoadPlan, measure


def test_the_http_benchmark_measures_every_server_without_errors(tmp_path: Path) -> None:
    outcome = measure(LoadPlan(connections=2, warmup=0.2, duration=1.0), tmp_path / "run")

    assert outcome.ceiling is not None
    for figures in outcome.all:
        assert figures.errors == 0, (figures.name, dict(figures.statuses), figures.lost)
        assert figures.requests > 0, figures.name
        assert figures.latencies_ms == sorted(figures.latencies_ms)
        assert 0 < figures.p(50) <= figures.p(99) <= figures.p(100)
    assert set(outcome.read.statuses) == {200}
    assert set(outcome.write.statuses) == {201}
    # Every successful write left exactly one durable ledger entry; nothing was refused.
    assert outcome.ledger.verified, outcome.ledger.problem
    assert outcome.ledger.writes == outcome.write.ok > 0
    assert "request.denied" not in outcome.ledger.by_action
    assert outcome.ledger_matches
