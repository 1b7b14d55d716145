"""Tamper suite: whoever edits the ledger's files is caught, at the position they edited.

Each test starts from a copy of a real ledger (several segments, sealed ones among them,
a key rotation, checkpoints every few entries), changes its files the way an insider with
write access could — a byte, a line, a reordering, a recomputed hash chain, a forged
checkpoint, a replaced key, a restored backup, a fork — and asserts that verification
fails and names the first entry or checkpoint that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import Checkpoint, Ledger, LedgerOptions, canonical, merkle
from audit.signing import new_key_record
from audit.verify import Report, verify
from tests.tarfiles import build_tar, read_members

OPTIONS = LedgerOptions(checkpoint_every=4, segment_entries=9, checkpoint_interval=3600)
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_PREV = re.compile(rb',"prev":"([0-9a-f]{64})","seq":')


@dataclass(frozen=True)
class Template:
    path: Path
    size: int
    checkpoints: list[Checkpoint]
    first_key: str


def build(path: Path, appends: int = 30, rotate_at: int = 13) -> Template:
    with Ledger(path, OPTIONS) as ledger:
        for number in range(appends):
            if number == rotate_at:
                ledger.rotate_key()
            ledger.append(
                action="dataset.read",
                actor=f"user:u{number % 3}",
                object=f"dataset:d{number}",
                detail={"rows": number, "组织": "青岛"},
            )
        first_key = ledger.keychain().records[0].key_id
    reopened = Ledger(path)
    template = Template(path, reopened.size, reopened.checkpoints(), first_key)
    reopened.close(checkpoint=False)
    return template


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return build(tmp_path_factory.mktemp("tamper") / "ledger")


@contextmanager
def copy_of(template: Template) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "ledger"
        shutil.copytree(template.path, target)
        yield target


class Segments:
    """The entry lines of a ledger copy, by segment, to edit and write back."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted((folder / "segments").glob("*.log"))
        self.lines = [path.read_bytes().split(b"\n")[:-1] for path in self.paths]

    def locate(self, seq: int) -> tuple[int, int]:
        for number, lines in enumerate(self.lines):
            if seq < len(lines):
                return number, seq
            seq -= len(lines)
        raise IndexError(seq)

    def get(self, seq: int) -> bytes:
        segment, line = self.locate(seq)
        return self.lines[segment][line]

    def set(self, seq: int, value: bytes) -> None:
        segment, line = self.locate(seq)
        self.lines[segment][line] = value

    def write(self) -> None:
        for path, lines in zip(self.paths, self.lines, strict=True):
            path.chmod(0o644)
            path.write_bytes(b"".join(line + b"\n" for line in lines))


def edit_segments(folder: Path, change: Callable[[Segments], None]) -> None:
    segments = Segments(folder)
    change(segments)
    segments.write()


def first_problem(report: Report) -> tuple[int | None, int | None]:
    assert not report.ok, "the tampering went unnoticed"
    assert report.problem is not None
    return report.problem.seq, report.problem.checkpoint


def rechain(segments: Segments, start: int, size: int) -> None:
    """Recompute every ``prev`` from ``start`` on, as a forger who knows the format would."""
    for seq in range(max(start, 1), size):
        prev = merkle.leaf_hash(segments.get(seq - 1)).hex().encode()
        segments.set(seq, _PREV.sub(b',"prev":"' + prev + b'","seq":', segments.get(seq)))


def covering(template: Template, seq: int) -> tuple[int, Checkpoint]:
    """The first checkpoint whose tree holds entry ``seq``."""
    return next((n, cp) for n, cp in enumerate(template.checkpoints) if cp.size > seq)


# ---------------------------------------------------------------- the template itself


def test_the_untouched_template_verifies(template: Template) -> None:
    report = verify(template.path, trusted_keys=[template.first_key])
    assert report.ok, report.problem
    assert report.entries == template.size == 32  # entry 0, 30 appends, the rotation
    assert report.checkpoints >= len(template.checkpoints)
    assert len(list((template.path / "segments").glob("*.seal"))) == 3
    assert len({cp.key_id for cp in template.checkpoints}) == 2


# ---------------------------------------------------------------- entries


def found_after(template: Template, change: Callable[[Segments], None]) -> int | None:
    """The seq verification reports after ``change`` to a copy of the template's entries."""
    with copy_of(template) as folder:
        edit_segments(folder, change)
        return first_problem(verify(folder))[0]


@EXAMPLES
@given(data=st.data())
def test_a_changed_byte_is_found_at_its_entry(template: Template, data: st.DataObject) -> None:
    seq = data.draw(st.integers(0, template.size - 1), label="seq")

    def change(segments: Segments) -> None:
        line = bytearray(segments.get(seq))
        at = data.draw(st.integers(0, len(line) - 1), label="byte")
        line[at] = data.draw(
            st.integers(0, 255).filter(lambda v: v not in (line[at], 0x0A)), label="value"
        )
        segments.set(seq, bytes(line))

    assert found_after(template, change) == seq


@EXAMPLES
@given(data=st.data())
def test_a_deleted_entry_is_found_where_it_was(template: Template, data: st.DataObject) -> None:
    seq = data.draw(st.integers(0, template.size - 2), label="seq")  # the last: see truncation

    def delete(segments: Segments) -> None:
        segment, line = segments.locate(seq)
        del segments.lines[segment][line]

    assert found_after(template, delete) == seq


@EXAMPLES
@given(data=st.data())
def test_an_inserted_entry_is_found_where_it_was_put(
    template: Template, data: st.DataObject
) -> None:
    at = data.draw(st.integers(1, template.size - 1), label="at")
    source = data.draw(st.integers(0, template.size - 1), label="copied from")
    forged = data.draw(st.booleans(), label="forged to fit")

    def insert(segments: Segments) -> None:
        line = segments.get(source)
        if forged:  # an entry claiming to be seq `at`, chained to the one before it
            prev = merkle.leaf_hash(segments.get(at - 1)).hex()
            line = re.sub(
                rb',"prev":"[0-9a-f]{64}","seq":\d+,',
                f',"prev":"{prev}","seq":{at},'.encode(),
                line,
            )
        segment, position = segments.locate(at)
        segments.lines[segment].insert(position, line)

    segments = Segments(template.path)
    original = [line for lines in segments.lines for line in lines]
    insert(segments)
    changed = [line for lines in segments.lines for line in lines]
    # The first position that no longer holds its entry: `at`, or one later when the
    # inserted line is a byte-for-byte copy of the entry that was at `at`.
    differs = next(
        (n for n, (a, b) in enumerate(zip(original, changed, strict=False)) if a != b),
        len(original),
    )
    assert differs in (at, at + 1)
    assert found_after(template, insert) == differs


@EXAMPLES
@given(data=st.data())
def test_swapped_entries_are_found_at_the_first(template: Template, data: st.DataObject) -> None:
    seq = data.draw(st.integers(0, template.size - 2), label="seq")

    def swap(segments: Segments) -> None:
        first, second = segments.get(seq), segments.get(seq + 1)
        segments.set(seq, second)
        segments.set(seq + 1, first)

    assert found_after(template, swap) == seq


@EXAMPLES
@given(data=st.data())
def test_entries_cut_from_the_end_are_missed_from_the_first_gone(
    template: Template, data: st.DataObject
) -> None:
    with copy_of(template) as folder:
        active = len(Segments(folder).lines[-1])
        count = data.draw(st.integers(1, active), label="entries removed")

        def truncate(segments: Segments) -> None:
            del segments.lines[-1][-count:]

        edit_segments(folder, truncate)
        seq, checkpoint = first_problem(verify(folder))
        assert seq == template.size - count
        assert checkpoint is not None  # the checkpoint that covered them says so
        assert "removed or the ledger was rolled back" in verify(folder).problem.reason  # type: ignore[union-attr]


@EXAMPLES
@given(data=st.data())
def test_a_recomputed_hash_chain_is_caught_by_the_checkpoints(
    template: Template, data: st.DataObject
) -> None:
    seq = data.draw(st.integers(1, template.size - 1), label="seq")
    drop_index = data.draw(st.booleans(), label="index removed too")
    position, cover = covering(template, seq)
    before = template.checkpoints[position - 1].size if position else 0
    with copy_of(template) as folder:

        def forge(segments: Segments) -> None:
            segments.set(seq, segments.get(seq).replace(b"user:u", b"user:x", 1))
            if b"user:x" not in segments.get(seq):  # a ledger.* entry: alter its time
                segments.set(seq, segments.get(seq).replace(b',"time":1', b',"time":2', 1))
            rechain(segments, seq + 1, template.size)

        edit_segments(folder, forge)
        if drop_index:
            shutil.rmtree(folder / "index")
        report = verify(folder)
        found, checkpoint = first_problem(report)
        if drop_index:
            # Only the checkpoint can tell, and it tells which entries it covers.
            assert checkpoint == position
            assert found is not None and before <= seq <= found < cover.size
            assert f"seq {before}..{cover.size - 1}" in report.problem.reason  # type: ignore[union-attr]
        else:
            # The index, written with each entry, points at the entry (a hint, never trusted).
            assert (found, checkpoint) == (seq, position)


# ---------------------------------------------------------------- checkpoints


def checkpoint_lines(folder: Path) -> list[bytes]:
    return (folder / "checkpoints.log").read_bytes().split(b"\n")[:-1]


def write_checkpoint_lines(folder: Path, lines: list[bytes]) -> None:
    (folder / "checkpoints.log").write_bytes(b"".join(line + b"\n" for line in lines))


@EXAMPLES
@given(data=st.data())
def test_a_changed_checkpoint_byte_is_found_at_its_checkpoint(
    template: Template, data: st.DataObject
) -> None:
    number = data.draw(st.integers(0, len(template.checkpoints) - 1), label="checkpoint")
    with copy_of(template) as folder:
        lines = checkpoint_lines(folder)
        line = bytearray(lines[number])
        at = data.draw(st.integers(0, len(line) - 1), label="byte")
        line[at] = data.draw(
            st.integers(0, 255).filter(lambda v: v not in (line[at], 0x0A)), label="value"
        )
        lines[number] = bytes(line)
        write_checkpoint_lines(folder, lines)
        assert first_problem(verify(folder))[1] == number


@EXAMPLES
@given(data=st.data())
def test_a_removed_checkpoint_breaks_the_checkpoint_chain(
    template: Template, data: st.DataObject
) -> None:
    number = data.draw(st.integers(0, len(template.checkpoints) - 2), label="checkpoint")
    with copy_of(template) as folder:
        lines = checkpoint_lines(folder)
        del lines[number]
        write_checkpoint_lines(folder, lines)
        assert first_problem(verify(folder))[1] == number


def test_rolling_back_past_the_newest_checkpoint_needs_a_witness_to_be_seen(
    template: Template,
) -> None:
    """Removing the newest checkpoint and the entries after the one before it leaves a
    ledger that is intact as far as it goes; only a witness of the newest one can tell."""
    newest, before = template.checkpoints[-1], template.checkpoints[-2]
    removed = newest.size - before.size
    for cut in ("whole line", "torn line"):
        with copy_of(template) as folder:
            lines = checkpoint_lines(folder)
            kept = b"".join(line + b"\n" for line in lines[:-1])
            torn = lines[-1][: len(lines[-1]) // 2] if cut == "torn line" else b""
            (folder / "checkpoints.log").write_bytes(kept + torn)
            edit_segments(
                folder, lambda segments: segments.lines[-1].__delitem__(slice(-removed, None))
            )
            alone = verify(folder)
            assert alone.ok, alone.problem
            report = verify(folder, witnessed=[newest])
            assert first_problem(report) == (before.size, None)
            assert "witnessed checkpoint" in report.problem.reason  # type: ignore[union-attr]
            assert "rolled back" in report.problem.reason  # type: ignore[union-attr]


def test_a_witnessed_checkpoint_confirms_a_ledger_that_lost_only_its_signature(
    template: Template,
) -> None:
    """Entries intact, newest checkpoint line gone: what the witness saw is still there."""
    with copy_of(template) as folder:
        write_checkpoint_lines(folder, checkpoint_lines(folder)[:-1])
        alone = verify(folder)
        assert alone.ok
        assert any("not yet covered by a checkpoint" in w for w in alone.warnings)
        assert verify(folder, witnessed=[template.checkpoints[-1]]).ok


@EXAMPLES
@given(data=st.data())
def test_reordered_checkpoints_are_found(template: Template, data: st.DataObject) -> None:
    number = data.draw(st.integers(0, len(template.checkpoints) - 2), label="checkpoint")
    with copy_of(template) as folder:
        lines = checkpoint_lines(folder)
        lines[number], lines[number + 1] = lines[number + 1], lines[number]
        write_checkpoint_lines(folder, lines)
        assert first_problem(verify(folder))[1] in (number, number + 1)


def test_a_checkpoint_signed_by_a_stranger_is_refused(template: Template) -> None:
    stranger = Ed25519PrivateKey.generate()
    with copy_of(template) as folder:
        lines = checkpoint_lines(folder)
        genuine = Checkpoint.decode(lines[2])
        forged = Checkpoint.signed(
            stranger,
            ledger=genuine.ledger,
            size=genuine.size,
            root=genuine.root,
            prev=genuine.prev,
            time=genuine.time,
            key_id=genuine.key_id,  # claiming to be the ledger's key
        )
        lines[2] = forged.encode()
        write_checkpoint_lines(folder, lines)
        assert first_problem(verify(folder))[1] == 2


# ---------------------------------------------------------------- keys


def test_a_replaced_key_file_and_re_signed_checkpoints_are_refused(template: Template) -> None:
    """An insider swaps the first key for one they hold and re-signs every checkpoint with it;
    the key recorded in entry 0 (and chained into every later entry) gives them away."""
    mine = Ed25519PrivateKey.generate()
    with copy_of(template) as folder:
        ledger_id = json.loads((folder / "LEDGER.json").read_bytes())["ledger"]
        record = new_key_record(mine, ledger=ledger_id, created=1, from_size=1, previous=None)
        for path in (folder / "keys").glob("*.json"):
            path.unlink()
        (folder / "keys" / f"{record.key_id}.json").write_text(json.dumps(record.to_dict()))
        lines, previous = [], None
        for line in checkpoint_lines(folder):
            old = Checkpoint.decode(line)
            new = Checkpoint.signed(
                mine,
                ledger=old.ledger,
                size=old.size,
                root=old.root,
                prev=previous.digest() if previous else old.prev,
                time=old.time,
                key_id=record.key_id,
            )
            lines.append(new.encode())
            previous = new
        write_checkpoint_lines(folder, lines)
        for seal in (folder / "segments").glob("*.seal"):
            seal.unlink()
        report = verify(folder)
        assert not report.ok
        assert report.problem is not None and report.problem.checkpoint == 0


def test_a_whole_substitute_ledger_is_exposed_by_a_pinned_key_or_a_witness(
    template: Template, tmp_path: Path
) -> None:
    """A ledger rebuilt from scratch is self-consistent: only a key or a checkpoint kept
    outside the operator's reach can tell it apart, which is why the report says the first
    key was taken on trust."""
    substitute = build(tmp_path / "substitute")
    unpinned = verify(substitute.path)
    assert unpinned.ok
    assert "taken on trust" in unpinned.trust
    pinned = verify(substitute.path, trusted_keys=[template.first_key])
    assert not pinned.ok
    assert pinned.problem is not None and "trusted" in pinned.problem.reason
    witnessed = verify(substitute.path, witnessed=[template.checkpoints[1]])
    assert not witnessed.ok


# ---------------------------------------------------------------- rollback and forks


def test_a_restored_backup_is_caught_by_a_witness(tmp_path: Path) -> None:
    live = tmp_path / "live"
    with Ledger(live, OPTIONS) as ledger:
        for number in range(10):
            ledger.append(action="a.b", actor="u", object=f"o:{number}")
        backup_size = ledger.size
    shutil.copytree(live, tmp_path / "backup")
    with Ledger(live, OPTIONS) as ledger:
        for number in range(10):
            ledger.append(action="a.b", actor="u", object=f"later:{number}")
    seen_later = Ledger(live).checkpoints()[-1]
    # The operator puts the backup in place of the live ledger.
    shutil.rmtree(live)
    shutil.copytree(tmp_path / "backup", live)
    assert verify(live).ok
    report = verify(live, witnessed=[seen_later])
    assert first_problem(report)[0] == backup_size
    assert "rolled back" in report.problem.reason  # type: ignore[union-attr]


def test_a_fork_is_caught_at_the_witnessed_checkpoint(tmp_path: Path) -> None:
    with Ledger(tmp_path / "a", OPTIONS) as ledger:
        for number in range(6):
            ledger.append(action="a.b", actor="u", object=f"o:{number}")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for name, word in (("a", "told-the-regulator"), ("b", "told-everyone-else")):
        with Ledger(tmp_path / name, OPTIONS) as ledger:
            for number in range(6):
                ledger.append(action="a.b", actor="u", object=f"{word}:{number}")
            ledger.checkpoint()
    seen = Ledger(tmp_path / "a").checkpoints()[-1]
    other = Ledger(tmp_path / "b").checkpoints()[-1]
    assert (seen.size, seen.ledger) == (other.size, other.ledger)
    assert seen.root != other.root
    assert verify(tmp_path / "b").ok
    report = verify(tmp_path / "b", witnessed=[seen])
    seq, _ = first_problem(report)
    assert seq == seen.size - 1
    assert "witnessed checkpoint" in report.problem.reason  # type: ignore[union-attr]
    assert verify(tmp_path / "a", witnessed=[seen]).ok


# ---------------------------------------------------------------- archives


def test_an_archive_edited_after_export_is_refused(template: Template, tmp_path: Path) -> None:
    with copy_of(template) as folder, Ledger(folder, OPTIONS) as ledger:
        ledger.export(3, 20, tmp_path / "evidence.tar")
    items = [
        (info.name, body) for info, body in read_members((tmp_path / "evidence.tar").read_bytes())
    ]

    def write(name: str, members: list[tuple[str, bytes]]) -> Path:
        (tmp_path / name).write_bytes(build_tar(members))
        return tmp_path / name

    assert verify(write("same.tar", items)).ok
    entries_at = next(i for i, (name, _) in enumerate(items) if "/entries/" in name)
    edited = list(items)
    name, body = edited[entries_at]
    edited[entries_at] = (name, body.replace(b"user:u1", b"user:u7", 1))
    report = verify(write("edited.tar", edited))
    assert not report.ok
    assert report.problem is not None
    # The manifest's digests say so; rewrite them and its signature says so instead.
    manifest = json.loads(edited[0][1])
    for described in manifest["files"]:
        if described["name"] == name.removeprefix("sbx-archive/"):
            new_body = edited[entries_at][1]
            described["sha256"] = hashlib.sha256(new_body).hexdigest()
            described["bytes"] = len(new_body)
    edited[0] = (edited[0][0], canonical.encode(manifest) + b"\n")
    report = verify(write("resigned.tar", edited))
    assert not report.ok
    assert report.problem is not None and "signature" in report.problem.reason
