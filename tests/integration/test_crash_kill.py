"""Writers killed with SIGKILL at random moments never lose an acknowledged entry and
never leave a ledger that fails to verify (200 kills, two writer processes at a time)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import Ledger, LedgerOptions
from audit.verify import verify
from tests.conftest import REPO_ROOT

KILLS = 200
OPTIONS = {"checkpoint_every": 40, "segment_entries": 700}

CHILD = """
import sys, threading
from audit import Ledger, LedgerOptions
path, name, options = sys.argv[1], sys.argv[2], dict(arg.split("=") for arg in sys.argv[3:])
ledger = Ledger(path, LedgerOptions(**{k: int(v) for k, v in options.items()}))
out = threading.Lock()

def write(thread):
    number = 0
    while True:
        marker = f"{name}-{thread}-{number}"
        receipt = ledger.append(action="crash.test", actor=f"process:{name}",
                                object=f"thing:{number}", detail={"marker": marker})
        with out:
            sys.stdout.write(f"{receipt.seq} {marker}\\n")
            sys.stdout.flush()
        number += 1

for thread in range(4):
    threading.Thread(target=write, args=(thread,), daemon=True).start()
threading.Event().wait()
"""


def start_writer(path: Path, name: str) -> subprocess.Popen[bytes]:
    args = [f"{key}={value}" for key, value in OPTIONS.items()]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), name, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )


def acknowledged(output: bytes) -> dict[int, str]:
    """seq -> marker for every complete line a writer printed after its append returned."""
    lines = output.split(b"\n")[:-1]  # the last piece may be cut off by the kill
    found = {}
    for line in lines:
        seq, marker = line.decode().split(" ")
        found[int(seq)] = marker
    return found


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger(path, LedgerOptions(**OPTIONS)).close()
    rng = random.Random(20261122)
    acked: dict[int, str] = {}
    kills = 0
    round_number = 0
    while kills < KILLS:
        writers = [start_writer(path, f"r{round_number}w{i}") for i in range(2)]
        for writer in writers:
            # Mostly while appending (the first append lands ~0.1 s after start), now and
            # then while the writer is still opening or repairing the ledger.
            early = rng.random() < 0.15
            time.sleep(rng.uniform(0.005, 0.09) if early else rng.uniform(0.09, 0.3))
            writer.send_signal(signal.SIGKILL)
        for writer in writers:
            out, err = writer.communicate(timeout=30)
            assert writer.returncode == -signal.SIGKILL, err.decode()[-2000:]
            for seq, marker in acknowledged(out).items():
                assert acked.setdefault(seq, marker) == marker, f"seq {seq} acknowledged twice"
            kills += 1
        round_number += 1
        if round_number % 25 == 0:  # the ledger verifies between crashes too
            report = verify(path)
            assert report.ok, report.problem

    assert len(acked) > KILLS, "the writers should have acknowledged many entries"
    with Ledger(path, LedgerOptions(**OPTIONS)) as ledger:
        ledger.append(action="crash.after", actor="test", object="ledger")  # repairs a torn tail
        stored = {}
        repairs = 0
        for seq, line in ledger.entries():
            value = json.loads(line)
            if value["action"] == "crash.test":
                stored[seq] = value["detail"]["marker"]
            repairs += value["action"] == "ledger.repair"
    lost = {seq: marker for seq, marker in acked.items() if stored.get(seq) != marker}
    assert lost == {}, f"{len(lost)} acknowledged entries lost or changed"
    report = verify(path, deep=True)
    assert report.ok, report.problem
    assert report.warnings == [] or all("not yet covered" in w for w in report.warnings)
    # Every repair kept what it removed.
    saved = list((path / "repairs").glob("*.bin")) if (path / "repairs").exists() else []
    assert len(saved) == repairs


def test_child_writer_really_writes(tmp_path: Path) -> None:
    # Guards the test above against passing vacuously with a child that never appends.
    path = tmp_path / "ledger"
    writer = start_writer(path, "probe")
    deadline = time.monotonic() + 20
    assert writer.stdout is not None
    first = writer.stdout.readline()
    assert time.monotonic() < deadline
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)
    seq, marker = first.decode().split()
    assert marker.startswith("probe-")
    assert int(seq) >= 1
    assert os.path.exists(path / "segments")
