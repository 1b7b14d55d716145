"""The native fast path, the Python reference path and the parallel walk agree exactly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import Ledger, LedgerOptions, scan
from audit.verify import Report, verify


def build(path: Path, entries: int, seed: int) -> None:
    rng = random.Random(seed)
    options = LedgerOptions(
        checkpoint_every=rng.randint(3, 40), segment_entries=rng.randint(20, 90)
    )
    with Ledger(path, options) as ledger:
        for number in range(entries):
            ledger.append(
                action="data.read",
                actor=f"user:{rng.randint(0, 9)}",
                object=f"dataset:{number}",
                detail={"n": number, "名": "值" * rng.randint(0, 3)},
            )
            if number == entries // 2:
                ledger.rotate_key()


def outcome(report: Report) -> tuple[object, ...]:
    problem = report.problem
    return (
        report.ok,
        report.entries,
        report.checkpoints,
        None if problem is None else (problem.seq, problem.checkpoint, problem.reason),
    )


def test_native_extension_is_built() -> None:
    # The suite must exercise the fast path, not silently fall back to Python.
    assert scan.native_available()


@pytest.mark.parametrize("seed", range(6))
def test_native_python_and_parallel_paths_agree(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger"
    build(ledger, 150, seed)
    rng = random.Random(seed)
    segments = sorted((ledger / "segments").glob("*.log"))
    target = rng.choice(segments)
    target.chmod(0o644)
    lines = target.read_bytes().split(b"\n")
    victim = rng.randrange(len(lines) - 1)
    edit = seed % 3
    if edit == 0:
        lines[victim] = lines[victim].replace(b'"user:', b'"usr:', 1)
    elif edit == 1:
        del lines[victim]
    else:
        lines.insert(victim, lines[victim])
    target.write_bytes(b"\n".join(lines))

    monkeypatch.setattr(scan, "TASK_BYTES", 700)  # many ranges per segment
    native = outcome(verify(ledger, workers=1))
    parallel = outcome(verify(ledger, workers=2))
    native_path = scan._walkfast
    monkeypatch.setattr(scan, "_walkfast", None)
    python = outcome(verify(ledger, workers=1))
    monkeypatch.setattr(scan, "_walkfast", native_path)
    assert native == python == parallel
    assert native[0] is False


def test_intact_ledger_verifies_the_same_way_on_every_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger"
    build(ledger, 300, 42)
    monkeypatch.setattr(scan, "TASK_BYTES", 1000)
    native = outcome(verify(ledger, workers=1))
    parallel = outcome(verify(ledger, workers=2))
    monkeypatch.setattr(scan, "_walkfast", None)
    python = outcome(verify(ledger, workers=1))
    assert native == python == parallel
    assert native[:2] == (True, Ledger(ledger).size)


def test_plan_tasks_cuts_only_at_line_boundaries(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    build(ledger, 80, 7)
    segments = sorted((str(p), int(p.name[:-4])) for p in (ledger / "segments").glob("*.log"))
    tasks = scan.plan_tasks(segments, task_bytes=500)
    assert len(tasks) > len(segments)
    for task in tasks:
        data = Path(task.path).read_bytes()
        assert data[task.start : task.end].endswith(b"\n")
        assert task.start == 0 or data[task.start - 1 : task.start] == b"\n"
    for path, _ in segments:
        covered = sorted((t.start, t.end) for t in tasks if t.path == path)
        assert covered[0][0] == 0 and covered[-1][1] == Path(path).stat().st_size
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))


def _segment_bytes(tmp_path: Path) -> bytes:
    ledger = tmp_path / "ledger"
    build(ledger, 60, 3)
    return b"".join(p.read_bytes() for p in sorted((ledger / "segments").glob("*.log")))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _segment_bytes(tmp_path_factory.mktemp("scan"))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_native_scanner_matches_the_reference_on_mangled_input(
    sample: bytes, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random byte edits, cuts and splices: both paths must report exactly the same."""
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(0, 4))):
        position = data.draw(st.integers(0, len(buf) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "cut"]))
        if action == "flip":
            buf[position] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del buf[position : position + data.draw(st.integers(1, 80))]
        elif action == "insert":
            buf[position:position] = data.draw(st.binary(min_size=1, max_size=40))
        else:
            del buf[position:]
        if not buf:
            buf = bytearray(b"\n")
    boundaries = sorted(set(data.draw(st.lists(st.integers(1, 70), max_size=8))))
    start = data.draw(st.sampled_from([0, sample.find(b"\n") + 1]))
    chunk = bytes(buf[start:])
    assert scan.native_available()
    native = scan.walk_range(chunk, boundaries)
    with monkeypatch.context() as patch:
        patch.setattr(scan, "_walkfast", None)
        python = scan.walk_range(chunk, boundaries)
    assert native == python
