"""``sbx serve`` runs the real server: first run prints the admin's one-time password."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    data_dir: Path, port: int, *, hub: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--hub" if hub else "--no-hub",
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "SBX_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_health(port: int, server: subprocess.Popen[str]) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as r:
                return dict(json.loads(r.read()))
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not answer within 60 s")


def run_once(data_dir: Path) -> str:
    port = free_port()
    server = start(data_dir, port)
    try:
        assert wait_for_health(port, server) == {"status": "ok"}
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "Traceback" not in output
    return output


def test_serve_starts_the_gateway_and_shows_the_first_password_once(tmp_path: Path) -> None:
    first = run_once(tmp_path / "var")
    assert "first administrator: admin with the one-time password" in first
    assert "/api/v1/docs" in first
    second = run_once(tmp_path / "var")
    assert "one-time password" not in second
    assert (tmp_path / "var" / "sbx.db").is_file()
    assert (tmp_path / "var" / "ledger" / "LEDGER.json").is_file()
