"""The witness over ledger folders (``python -m audit.witness --ledger``): real ledgers in
temporary folders, copied, grown apart, rolled back and tampered with, and the witness
file read back by ``python -m audit.verify --witness``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit import Ledger, merkle
from audit.verify import main as verify_main
from audit.witness import Outcome, Report, pin_path, witness
from audit.witness_sources import LedgerFolder, api_base, consistency_path, open_source
from tests.conftest import REPO_ROOT


def grow(folder: Path, count: int, *, actor: str = "user:li.wei") -> Path:
    """Append ``count`` entries (a new ledger on first use); closing signs a checkpoint."""
    with Ledger(folder) as ledger:
        for number in range(count):
            ledger.append(
                action="dataset.read", actor=actor, object=f"dataset:{number}", detail={"行": 1}
            )
    return folder


def run(folder: Path, seen: Path, trusted_key: str | None = None) -> Report:
    return witness(LedgerFolder(folder), seen, trusted_key=trusted_key)


def first_key(folder: Path) -> str:
    with Ledger(folder) as ledger:
        return ledger.keychain().records[0].key_id


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return grow(tmp_path / "ledger", 4)


@pytest.fixture
def seen(tmp_path: Path) -> Path:
    return tmp_path / "regulator" / "seen.log"


@pytest.fixture(autouse=True)
def regulator_folder(seen: Path) -> None:
    seen.parent.mkdir()


def test_the_first_run_keeps_the_checkpoint_and_later_runs_only_newer_ones(
    ledger: Path, seen: Path
) -> None:
    first = run(ledger, seen)
    assert (first.outcome, first.appended) == (Outcome.OK, True), first.message
    assert first.message.startswith("first checkpoint witnessed: size 5")
    assert "taken on trust (pin it with --trusted-key)" in first.trust
    pin = json.loads(pin_path(seen).read_bytes())
    assert pin == {"first_key": first_key(ledger), "ledger": first.ledger, "on_trust": True, "v": 1}

    again = run(ledger, seen)
    assert (again.outcome, again.appended) == (Outcome.OK, False)
    assert again.message.startswith(
        "no new entries: the latest checkpoint is still the one of size 5"
    )
    assert len(lines(seen)) == 1

    grow(ledger, 3)
    newer = run(ledger, seen)
    assert (newer.outcome, newer.appended) == (Outcome.OK, True), newer.message
    assert "size 8: consistent with size 5 seen before" in newer.message
    assert "3 entries added, none changed" in newer.message
    assert [json.loads(line)["size"] for line in lines(seen)] == [5, 8]
    # The file is exactly what the verifier reads, and the ledger agrees with it.
    assert verify_main([str(ledger), "--witness", str(seen)]) == 0


def test_the_module_runs_on_its_own_and_reports_json(ledger: Path, seen: Path) -> None:
    command = [sys.executable, "-m", "audit.witness", str(seen), "--ledger", str(ledger)]
    done = subprocess.run([*command, "--json"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["outcome"], report["exit"], report["appended"]) == ("ok", 0, True)
    assert report["latest"]["size"] == 5
    assert report["latest"] == json.loads(lines(seen)[0])


def test_a_ledger_put_back_to_an_old_copy_is_a_rollback(
    ledger: Path, seen: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(ledger, backup)
    grow(ledger, 3)
    assert run(ledger, seen).outcome is Outcome.OK
    kept = seen.read_bytes()
    shutil.rmtree(ledger)
    shutil.copytree(backup, ledger)

    back = run(ledger, seen)
    assert back.outcome is Outcome.ROLLBACK
    assert back.message.startswith("the ledger's latest checkpoint has size 5, below size 8")
    assert "entries 5 … 7 were removed" in back.message
    assert seen.read_bytes() == kept  # nothing is kept from a failed run
    assert verify_main([str(ledger), "--witness", str(seen)]) == 1

    # Written on past the witnessed size, it still cannot prove what the witness saw.
    grow(ledger, 6)
    still = run(ledger, seen)
    assert still.outcome is Outcome.ROLLBACK
    assert "cannot prove that it still holds the checkpoint of size 8" in still.message
    assert "no checkpoint of size 8" in still.message


def test_copies_grown_apart_are_a_fork(ledger: Path, seen: Path, tmp_path: Path) -> None:
    twin, later_twin = tmp_path / "twin", tmp_path / "later-twin"
    shutil.copytree(ledger, twin)
    shutil.copytree(ledger, later_twin)
    grow(ledger, 3, actor="user:li.wei")
    grow(twin, 3, actor="user:wang.fang")
    grow(later_twin, 3, actor="user:wang.fang")
    grow(later_twin, 2)
    assert run(ledger, seen).outcome is Outcome.OK

    same_size = run(twin, seen)
    assert same_size.outcome is Outcome.FORK
    assert "tree of size 8 has root" in same_size.message
    assert "the entries were rewritten" in same_size.message

    larger = run(later_twin, seen)
    assert larger.outcome is Outcome.FORK
    assert "tree of size 8 has root" in larger.message
    assert len(lines(seen)) == 1


def test_an_entry_rewritten_under_intact_checkpoints_fails_the_proof(
    ledger: Path, seen: Path
) -> None:
    assert run(ledger, seen).outcome is Outcome.OK
    grow(ledger, 3)
    segment = next((ledger / "segments").glob("*.log"))
    segment.chmod(0o644)
    segment.write_bytes(segment.read_bytes().replace(b'"dataset:1"', b'"dataset:9"', 1))
    rewritten = run(ledger, seen)
    assert rewritten.outcome is Outcome.FORK
    assert "the consistency proof from size 5 to size 8 fails" in rewritten.message


@pytest.mark.parametrize("member", ["sig", "root"])
def test_a_tampered_checkpoint_is_a_bad_signature(ledger: Path, seen: Path, member: str) -> None:
    assert run(ledger, seen).outcome is Outcome.OK
    grow(ledger, 2)
    log = ledger / "checkpoints.log"
    *head, last = lines(log)
    checkpoint = json.loads(last)
    value = checkpoint[member]
    if member == "sig":  # another base64 character: still a signature, not this one
        checkpoint[member] = value[:5] + ("B" if value[5] == "A" else "A") + value[6:]
    else:  # another root: the signature no longer covers it
        checkpoint[member] = ("1" if value[0] == "0" else "0") + value[1:]
    encoded = json.dumps(checkpoint, sort_keys=True, separators=(",", ":")).encode()
    log.write_bytes(b"\n".join([*head, encoded]) + b"\n")
    tampered = run(ledger, seen)
    assert tampered.outcome is Outcome.BAD_SIGNATURE
    assert (
        tampered.message
        == "the latest checkpoint (size 7): checkpoint of size 7 has a bad signature"
    )
    assert len(lines(seen)) == 1


def test_the_pinned_first_key_is_held_to(ledger: Path, seen: Path, tmp_path: Path) -> None:
    stranger = grow(tmp_path / "stranger", 1)
    wrong = run(ledger, seen, trusted_key=first_key(stranger))
    assert wrong.outcome is Outcome.KEY_CHANGED
    assert f"the ledger's first key is {first_key(ledger)}" in wrong.message
    assert not pin_path(seen).exists()

    right = run(ledger, seen, trusted_key=first_key(ledger))
    assert right.outcome is Outcome.OK
    assert right.trust == f"first key {first_key(ledger)} is pinned"
    assert json.loads(pin_path(seen).read_bytes())["on_trust"] is False

    replaced = run(stranger, seen)
    assert replaced.outcome is Outcome.KEY_CHANGED
    assert "another ledger replaced it" in replaced.message
    contradicted = run(ledger, seen, trusted_key=first_key(stranger))
    assert contradicted.outcome is Outcome.UNUSABLE
    assert "is not the key pinned in" in contradicted.message


def test_a_key_pinned_on_trust_is_confirmed_later_and_rotations_are_followed(
    ledger: Path, seen: Path
) -> None:
    assert run(ledger, seen).outcome is Outcome.OK
    with Ledger(ledger) as writer:
        writer.rotate_key()
        writer.append(action="dataset.read", actor="user:li.wei", object="dataset:1")
    later = run(ledger, seen)
    assert later.outcome is Outcome.OK, later.message
    assert "taken on trust then (confirm it with --trusted-key)" in later.trust
    confirmed = run(ledger, seen, trusted_key=first_key(ledger))
    assert confirmed.outcome is Outcome.OK
    assert json.loads(pin_path(seen).read_bytes())["on_trust"] is False
    assert verify_main([str(ledger), "--witness", str(seen)]) == 0


def test_unreadable_sources_and_witness_files_are_refused_plainly(
    ledger: Path, seen: Path, tmp_path: Path
) -> None:
    missing = run(tmp_path / "nowhere", seen)
    assert missing.outcome is Outcome.UNREACHABLE
    assert missing.message.endswith("nowhere is not a ledger folder (no LEDGER.json)")

    unsigned = tmp_path / "unsigned"
    Ledger(unsigned).close(checkpoint=False)
    nothing = run(unsigned, seen)
    assert (nothing.outcome, nothing.message.startswith("nothing to witness yet")) == (
        Outcome.UNREACHABLE,
        True,
    )

    assert run(ledger, seen).outcome is Outcome.OK
    seen.write_bytes(seen.read_bytes() + b"not a checkpoint\n")
    broken = run(ledger, seen)
    assert broken.outcome is Outcome.UNUSABLE
    assert "is not a witness file" in broken.message

    assert run(ledger, seen, trusted_key="beef").outcome is Outcome.UNUSABLE
    with pytest.raises(ValueError, match="either --ledger DIR or --url URL"):
        open_source()
    with pytest.raises(ValueError, match="SBX_TOKEN"):
        open_source(url="https://sbx.example.cn", environ={})


def test_a_witness_given_a_rolled_back_ledger_with_no_checkpoint_left_says_so(
    ledger: Path, seen: Path
) -> None:
    assert run(ledger, seen).outcome is Outcome.OK
    (ledger / "checkpoints.log").write_bytes(b"")
    emptied = run(ledger, seen)
    assert emptied.outcome is Outcome.ROLLBACK
    assert "no checkpoint at all, but this witness saw size 5" in emptied.message


def test_gateway_addresses_must_be_https_except_on_this_machine() -> None:
    assert api_base("https://sbx.example.cn") == "https://sbx.example.cn/api/v1"
    assert api_base("https://sbx.example.cn:8443/sbx/api/v1/") == (
        "https://sbx.example.cn:8443/sbx/api/v1"
    )
    assert api_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000/api/v1"
    for refused in ("http://sbx.example.cn", "ftp://x", "https://u:p@sbx.example.cn", "sbx"):
        with pytest.raises(ValueError, match="--url"):
            api_base(refused)


def test_consistency_paths_from_a_stream_match_the_reference() -> None:
    leaves = [merkle.leaf_hash(str(n).encode()) for n in range(40)]
    for new in range(1, len(leaves) + 1):
        for old in range(1, new + 1):
            expected = merkle.consistency_proof(leaves[:new], old)
            assert consistency_path(iter(leaves), old, new) == expected, (old, new)
