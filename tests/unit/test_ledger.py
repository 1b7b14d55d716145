"""The ledger's Python API: appends, checkpoints, segments, keys, proofs, archives, repair."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from audit import (
    ArchiveError,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    LedgerError,
    LedgerOptions,
    ProofError,
    merkle,
)
from audit.entry import parse
from audit.verify import verify
from tests.conftest import REPO_ROOT


class Clock:
    """A clock the test moves by hand (µs)."""

    def __init__(self, start: int = 1_700_000_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


def add(ledger: Ledger, count: int, tag: str = "t") -> None:
    for number in range(count):
        ledger.append(action="test.write", actor=f"user:{tag}", object=f"obj:{number}")


def assert_intact(path: Path, **options: object) -> None:
    report = verify(path, **options)  # type: ignore[arg-type]
    assert report.ok, report.problem
    assert report.problem is None


# ---------------------------------------------------------------- entries


def test_receipt_names_the_durable_entry_and_its_leaf(ledger_dir: Path) -> None:
    with Ledger(ledger_dir) as ledger:
        receipt = ledger.append(
            action="grant.approve",
            actor="user:li.wei",
            object="grant:g-1",
            outcome="allowed",
            detail={"organization": "青岛数据公司", "rows": 12},
        )
        line = ledger.read_entry(receipt.seq)
    assert receipt.seq == 1  # entry 0 is the ledger's own
    assert receipt.leaf_hash == merkle.leaf_hash(line)
    entry = parse(line)
    assert entry["time"] == receipt.time
    assert (entry["action"], entry["actor"], entry["object"], entry["outcome"]) == (
        "grant.approve",
        "user:li.wei",
        "grant:g-1",
        "allowed",
    )
    assert entry["detail"] == {"organization": "青岛数据公司", "rows": 12}
    # The bytes are canonical: sorted keys, no whitespace, UTF-8 as itself.
    assert line.startswith(b'{"action":"grant.approve","actor":"user:li.wei","detail":{')
    assert "青岛数据公司".encode() in line


def test_entry_zero_creates_the_ledger_and_every_entry_chains_to_the_one_before(
    ledger_dir: Path,
) -> None:
    with Ledger(ledger_dir) as ledger:
        add(ledger, 5)
        entries = [parse(line) for _, line in ledger.entries()]
        lines = [line for _, line in ledger.entries()]
        ledger_id = ledger.ledger_id
    assert entries[0]["action"] == "ledger.create"
    assert entries[0]["object"] == f"ledger:{ledger_id}"
    assert entries[0]["prev"] == "0" * 64
    assert entries[0]["detail"]["key"]["key_id"]
    for seq, entry in enumerate(entries):
        assert entry["seq"] == seq
        if seq:
            assert entry["prev"] == merkle.leaf_hash(lines[seq - 1]).hex()
            assert entry["time"] >= entries[seq - 1]["time"]


def test_appends_are_fsynced_before_they_are_acknowledged(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(ledger_dir)
    add(ledger, 1)
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        real(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fdatasync", spy)
    segment = next((ledger_dir / "segments").glob("*.log"))
    receipt = ledger.append(action="a.b", actor="u", object="o")
    # The segment, as long as it is once the entry is in it, was synced before the return.
    assert segment.stat().st_size in synced
    assert receipt.seq == 2
    ledger.close()


def test_a_reopened_ledger_continues_the_chain(ledger_dir: Path) -> None:
    with Ledger(ledger_dir) as ledger:
        add(ledger, 3)
        ledger_id = ledger.ledger_id
    with Ledger(ledger_dir) as ledger:
        assert ledger.ledger_id == ledger_id
        assert ledger.size == 4
        assert ledger.append(action="a.b", actor="u", object="o").seq == 4
    assert_intact(ledger_dir)


# ---------------------------------------------------------------- checkpoints


def test_checkpoints_come_every_n_entries(ledger_dir: Path) -> None:
    options = LedgerOptions(checkpoint_every=4, checkpoint_interval=3600)
    with Ledger(ledger_dir, options) as ledger:
        add(ledger, 10)
        sizes = [cp.size for cp in ledger.checkpoints()]
    # Entry 0 plus 10 appends, one at a time: a checkpoint once 4 are unsigned.
    assert sizes == [4, 8]
    # close() signs the rest.
    assert [cp.size for cp in Ledger(ledger_dir).checkpoints()] == [4, 8, 11]
    assert_intact(ledger_dir)


def test_checkpoints_come_every_t_seconds(ledger_dir: Path) -> None:
    clock = Clock()
    options = LedgerOptions(checkpoint_every=10_000, checkpoint_interval=60, clock=clock)
    ledger = Ledger(ledger_dir, options)
    add(ledger, 2)
    assert ledger.checkpoints() == []
    clock.advance(61)
    add(ledger, 1)
    assert [cp.size for cp in ledger.checkpoints()] == [4]
    clock.advance(30)
    add(ledger, 1)
    assert len(ledger.checkpoints()) == 1  # not yet
    ledger.close(checkpoint=False)


def test_the_ticker_signs_entries_that_wait_with_no_further_append(ledger_dir: Path) -> None:
    options = LedgerOptions(checkpoint_every=10_000, checkpoint_interval=0.2)
    ledger = Ledger(ledger_dir, options)
    add(ledger, 3)
    deadline = threading.Event()
    for _ in range(50):
        latest = ledger.latest_checkpoint()
        if latest is not None and latest.size == 4:
            break
        deadline.wait(0.1)
    assert latest is not None and latest.size == 4
    ledger.close(checkpoint=False)


def test_checkpoint_signs_only_a_grown_tree(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=1000)) as ledger:
        add(ledger, 2)
        first = ledger.checkpoint()
        again = ledger.checkpoint()
        assert again == first
        assert len(ledger.checkpoints()) == 1
        add(ledger, 1)
        second = ledger.checkpoint()
        keys = ledger.keychain()
    assert (first.size, second.size) == (3, 4)
    assert second.prev == first.digest()  # checkpoints chain, too
    first.check(keys)
    second.check(keys)
    assert first.root == merkle.root(
        [merkle.leaf_hash(line) for _, line in Ledger(ledger_dir).entries(0, 3)]
    )


# ---------------------------------------------------------------- segments and keys


def test_full_segments_are_sealed_read_only_and_reading_spans_them(ledger_dir: Path) -> None:
    options = LedgerOptions(segment_entries=4, checkpoint_every=3)
    with Ledger(ledger_dir, options) as ledger:
        add(ledger, 13)
        everything = list(ledger.entries())
        middle = list(ledger.entries(3, 9))
    segments = sorted((ledger_dir / "segments").glob("*.log"))
    seals = sorted((ledger_dir / "segments").glob("*.seal"))
    assert [p.name[:-4] for p in segments] == [f"{n:020d}" for n in (0, 4, 8, 12)]
    assert [p.name[:-5] for p in seals] == [f"{n:020d}" for n in (0, 4, 8)]
    for path in [*segments[:-1], *seals]:
        assert not stat.S_IMODE(path.stat().st_mode) & 0o222, path
    assert os.access(segments[-1], os.W_OK)
    seal = json.loads(seals[1].read_text())
    assert (seal["first"], seal["count"], seal["checkpoint"]["size"]) == (4, 4, 8)
    assert [seq for seq, _ in everything] == list(range(14))
    assert middle == everything[3:9]
    assert_intact(ledger_dir)


def test_rotated_keys_keep_old_checkpoints_verifiable(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=2)) as ledger:
        add(ledger, 3)
        old_key = ledger.signing_key()[0]
        new_key = ledger.rotate_key()
        add(ledger, 3)
        checkpoints = ledger.checkpoints()
        keys = ledger.keychain()
        last = ledger.read_entry(ledger.size - 4)
    assert new_key.key_id != old_key.key_id
    assert new_key.previous == old_key.key_id
    assert parse(last)["action"] == "ledger.key.rotate"
    signers = {cp.key_id for cp in checkpoints}
    assert signers == {old_key.key_id, new_key.key_id}
    for cp in checkpoints:
        cp.check(keys)
    assert_intact(ledger_dir, trusted_keys=[old_key.key_id])
    report = verify(ledger_dir, trusted_keys=[new_key.key_id])
    assert not report.ok  # the chain starts at the first key, not a later one


# ---------------------------------------------------------------- proofs


def test_inclusion_and_consistency_proofs_round_trip_as_json(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=5)) as ledger:
        add(ledger, 20)
        keys = ledger.keychain()
        sizes = [cp.size for cp in ledger.checkpoints()]
        inclusions = [ledger.prove_inclusion(seq) for seq in (0, 7, ledger.size - 1)]
        pinned = ledger.prove_inclusion(2, tree_size=sizes[0])
        consistency = ledger.prove_consistency(sizes[0])
        between = ledger.prove_consistency(sizes[0], sizes[1])
    for proof in [*inclusions, pinned]:
        document = json.loads(json.dumps(proof.to_dict()))
        again = InclusionProof.from_dict(document)
        assert again == proof
        again.verify(keys)
    assert pinned.checkpoint.size == sizes[0]
    for proof in (consistency, between):
        again = ConsistencyProof.from_dict(json.loads(json.dumps(proof.to_dict())))
        assert again == proof
        again.verify(keys)
    assert (between.old.size, between.new.size) == (sizes[0], sizes[1])


def test_tampered_proofs_are_refused(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=5)) as ledger:
        add(ledger, 12)
        keys = ledger.keychain()
        inclusion = ledger.prove_inclusion(6).to_dict()
        consistency = ledger.prove_consistency(5).to_dict()
    edits = [
        lambda d: d.update(entry=d["entry"].replace("user:t", "user:x")),
        lambda d: d.update(seq=d["seq"] + 1),
        lambda d: d["path"].reverse(),
        lambda d: d["path"].pop(),
        lambda d: d["checkpoint"].update(size=d["checkpoint"]["size"] + 1),
        lambda d: d["checkpoint"].update(root="00" * 32),
    ]
    for edit in edits:
        document = json.loads(json.dumps(inclusion))
        edit(document)
        with pytest.raises(LedgerError):
            InclusionProof.from_dict(document).verify(keys)
    for side in ("old", "new"):
        document = json.loads(json.dumps(consistency))
        document[side]["root"] = "11" * 32
        with pytest.raises(LedgerError):
            ConsistencyProof.from_dict(document).verify()
    document = json.loads(json.dumps(consistency))
    document["path"][0] = "22" * 32
    with pytest.raises(ProofError):
        ConsistencyProof.from_dict(document).verify()
    # A re-signed checkpoint from a key outside the chain is refused when keys are given.
    document = json.loads(json.dumps(inclusion))
    document["checkpoint"]["sig"] = document["checkpoint"]["sig"][::-1]
    with pytest.raises(LedgerError):
        InclusionProof.from_dict(document).verify(keys)


def test_proofs_of_missing_entries_or_checkpoints_are_clear_errors(ledger_dir: Path) -> None:
    with Ledger(ledger_dir) as ledger:
        add(ledger, 2)
        with pytest.raises(ProofError, match="no entry 50"):
            ledger.prove_inclusion(50)
        with pytest.raises(ProofError, match="no checkpoint of size 2"):
            ledger.prove_consistency(2)
        with pytest.raises(ProofError, match="does not contain seq 2"):
            ledger.prove_inclusion(2, tree_size=1)


# ---------------------------------------------------------------- concurrency


def test_threads_share_fsyncs_and_lose_nothing(ledger_dir: Path) -> None:
    ledger = Ledger(ledger_dir, LedgerOptions(checkpoint_every=50))
    receipts: dict[str, list[int]] = {}

    def writer(name: str) -> None:
        receipts[name] = [
            ledger.append(action="t.w", actor=f"user:{name}", object=f"o:{n}").seq
            for n in range(60)
        ]

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    seqs = sorted(seq for values in receipts.values() for seq in values)
    assert seqs == list(range(1, 481))
    with Ledger(ledger_dir) as reader:
        by_seq = {seq: parse(line) for seq, line in reader.entries()}
    for name, values in receipts.items():
        assert values == sorted(values)  # each thread's entries in its own order
        assert [by_seq[seq]["object"] for seq in values] == [f"o:{n}" for n in range(60)]
        assert {by_seq[seq]["actor"] for seq in values} == {f"user:{name}"}
    assert_intact(ledger_dir)


def _process_writer(path: str, name: str, count: int) -> list[int]:
    with Ledger(path, LedgerOptions(checkpoint_every=7, segment_entries=40)) as ledger:
        return [
            ledger.append(action="p.w", actor=f"proc:{name}", object=f"o:{n}").seq
            for n in range(count)
        ]


def test_processes_append_to_one_ledger_safely(ledger_dir: Path) -> None:
    Ledger(ledger_dir, LedgerOptions(segment_entries=40)).close()
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(_process_writer, [(str(ledger_dir), f"p{n}", 50) for n in range(3)])
    seqs = sorted(seq for values in results for seq in values)
    assert seqs == list(range(1, 151))
    assert_intact(ledger_dir)
    with Ledger(ledger_dir) as ledger:
        assert ledger.size == 151
        # Sizes are non-decreasing and every one is signed by the same chain.
        sizes = [cp.size for cp in ledger.checkpoints()]
    assert sizes == sorted(sizes)
    assert len(list((ledger_dir / "segments").glob("*.seal"))) == 3


# ---------------------------------------------------------------- archives


@pytest.mark.parametrize(
    ("first", "last", "name"),
    [(3, 6, "mid.tar"), (2, 17, "across.tar"), (0, 22, "all.tar.gz"), (22, 22, "one.tar")],
)
def test_exports_verify_on_their_own(
    tmp_path: Path, ledger_dir: Path, first: int, last: int, name: str
) -> None:
    options = LedgerOptions(segment_entries=8, checkpoint_every=5)
    with Ledger(ledger_dir, options) as ledger:
        add(ledger, 22)
        manifest = ledger.export(first, last, tmp_path / name)
    assert manifest["entries"] == {"count": last - first + 1, "first": first, "last": last}
    report = verify(tmp_path / name)
    assert report.ok, report.problem
    assert (report.kind, report.first_seq, report.entries) == ("archive", first, last + 1)
    with tarfile.open(tmp_path / name) as tar:
        names = tar.getnames()
    assert names[0] == "sbx-archive/MANIFEST.json"
    assert "sbx-archive/LEDGER.json" in names
    assert any(n.startswith("sbx-archive/keys/") for n in names)
    assert not list(tmp_path.glob(".*.partial"))


def test_export_refuses_ranges_that_do_not_exist(tmp_path: Path, ledger_dir: Path) -> None:
    with Ledger(ledger_dir) as ledger:
        add(ledger, 3)
        with pytest.raises(ArchiveError, match="empty or negative"):
            ledger.export(3, 1, tmp_path / "a.tar")
        with pytest.raises(LedgerError, match="no entry 9"):
            ledger.export(1, 9, tmp_path / "a.tar")
    assert not (tmp_path / "a.tar").exists()


def test_standalone_verifier_needs_only_the_audit_folder(tmp_path: Path, ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=4, segment_entries=6)) as ledger:
        add(ledger, 15)
        ledger.export(2, 12, tmp_path / "evidence.tar.gz")
    elsewhere = tmp_path / "regulator"
    shutil.copytree(REPO_ROOT / "audit", elsewhere / "audit")
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-s", "-c", PROBE, str(path)],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for target in (tmp_path / "evidence.tar.gz", ledger_dir):
        result = run(target)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"{elsewhere}/audit\nOK: ")
    data = bytearray((tmp_path / "evidence.tar.gz").read_bytes())
    (tmp_path / "evidence.tar.gz").unlink()
    data[len(data) // 2] ^= 0x40
    (tmp_path / "broken.tar.gz").write_bytes(bytes(data))
    result = run(tmp_path / "broken.tar.gz")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert "Traceback" not in result.stderr


# The verifier as a regulator runs it, after saying where `audit` was imported from (the
# copy, never the repository) and that nothing of sbx's other packages came along.
PROBE = """
import runpy, sys
import audit
print(audit.__path__[0])
sys.argv = ["audit.verify", sys.argv[1]]
try:
    runpy.run_module("audit.verify", run_name="__main__")
finally:
    assert not {"gateway", "sandbox"} & set(sys.modules), "sbx code was imported"
"""


# ---------------------------------------------------------------- repair of torn tails


def test_a_torn_segment_tail_is_moved_aside_and_recorded(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=1000)) as ledger:
        add(ledger, 4)
    segment = next((ledger_dir / "segments").glob("*.log"))
    torn = b'{"action":"never.acknowledged","actor":"u","det'
    os.chmod(segment, 0o644)
    with open(segment, "ab") as handle:
        handle.write(torn)
    report = verify(ledger_dir)
    assert report.ok, report.problem  # never acknowledged: a warning, not a failure
    assert any("incomplete final line" in w for w in report.warnings)
    with Ledger(ledger_dir) as ledger:
        receipt = ledger.append(action="a.b", actor="u", object="o")
        repair = parse(ledger.read_entry(receipt.seq - 1))
    assert receipt.seq == 6
    assert repair["action"] == "ledger.repair"
    assert repair["detail"]["at_seq"] == 5
    assert repair["detail"]["bytes"] == len(torn)
    saved = ledger_dir / repair["detail"]["saved_as"]
    assert saved.read_bytes() == torn
    assert not segment.read_bytes().endswith(torn)
    report = verify(ledger_dir)
    assert report.ok and not report.warnings, (report.problem, report.warnings)


def test_a_torn_checkpoint_line_is_moved_aside_and_recorded(ledger_dir: Path) -> None:
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=2)) as ledger:
        add(ledger, 4)
    count = len(Ledger(ledger_dir).checkpoints())
    log = ledger_dir / "checkpoints.log"
    half = log.read_bytes().splitlines()[-1][:40]
    with open(log, "ab") as handle:
        handle.write(half)
    with Ledger(ledger_dir, LedgerOptions(checkpoint_every=2)) as ledger:
        assert len(ledger.checkpoints()) == count  # a torn line is not a checkpoint
        add(ledger, 1)
        actions = [parse(line)["action"] for _, line in ledger.entries()]
    assert "ledger.repair" in actions
    data = log.read_bytes()
    assert data.endswith(b"\n")
    assert all(Checkpoint.decode(line) for line in data.splitlines())  # the torn one is gone
    repairs = list((ledger_dir / "repairs").iterdir())
    assert [path.read_bytes() for path in repairs] == [half]
    assert_intact(ledger_dir)
