"""The writer lock: waits its turn, gives up after the timeout, never leaks the lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import Ledger, LedgerBusy, LedgerError, LedgerOptions
from audit.store import FileLock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_lock_times_out_with_a_clear_error_and_is_not_leaked(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger", LedgerOptions(lock_timeout=0.3))
    ledger.append(action="a", actor="u", object="o")
    holder = hold_lock(tmp_path / "ledger" / "lock", 1.5)
    started = time.monotonic()
    with pytest.raises(LedgerError, match="stayed locked"):
        ledger.append(action="b", actor="u", object="o")
    assert time.monotonic() - started < 1.2
    holder.communicate()
    # The helper that got the lock after the caller gave up must have let it go.
    receipt = ledger.append(action="c", actor="u", object="o")
    assert receipt.seq == 2
    ledger.close()


def test_waiter_gets_the_lock_when_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = hold_lock(path, 0.4)
    lock = FileLock(path)
    started = time.monotonic()
    lock.acquire(timeout=5)
    waited = time.monotonic() - started
    lock.release()
    lock.close()
    holder.communicate()
    assert 0.2 < waited < 3


def test_busy_is_a_ledger_error() -> None:
    assert issubclass(LedgerBusy, LedgerError)
