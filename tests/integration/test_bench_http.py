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


def test_a_server_stops_on_sigint_even_when_it_inherited_sigint_ignored() -> None:
    # A test runner's worker may hand its children an ignored SIGINT; the benchmark's
    # servers must still stop when the benchmark interrupts them.
    import signal
    import socket
    import subprocess
    import sys
    import time

    from bench.http import free_port
    from tests.conftest import REPO_ROOT

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.http", "serve", "canned", "--port", str(port)],
        cwd=REPO_ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
