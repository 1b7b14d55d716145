"""The ledger: durable, concurrent, append-only; checkpoints, key rotation, proofs.

``Ledger(path).append(...)`` returns only once the entry is on disk (``fdatasync``).
Appends from many threads share one commit: callers queue their entries, a committer
thread takes everything queued, and writes and syncs it in one go (group commit).
Processes coordinate through an ``flock`` on ``path/lock``; a writer that takes the lock
first catches up with what other processes wrote, and repairs a torn tail that a killed
writer left behind, recording the repair as an entry of its own.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import canonical, entry, merkle
from audit.checkpoint import FIRST_PREV, Checkpoint
from audit.errors import InvalidEntry, LedgerDamaged, LedgerError, ProofError
from audit.groupcommit import GroupCommit
from audit.keystore import active_key, keychain_from_files, store_key
from audit.proofs import ConsistencyProof, InclusionProof
from audit.recovery import read_entry, recover_tail
from audit.signing import KeyChain, KeyRecord, new_key_record
from audit.store import (
    FileLock,
    Index,
    IndexBatch,
    Segments,
    read_json,
    read_last_checkpoint,
    write_atomic,
)

if TYPE_CHECKING:
    from audit.verify import Report

LEDGER_FORMAT = "sbx-ledger"
LEDGER_VERSION = 1
SYSTEM_ACTOR = "system:ledger"
KEY_ACTIONS = frozenset({"ledger.create", "ledger.key.rotate"})


def now_us() -> int:
    return time.time_ns() // 1000


class Receipt(NamedTuple):
    """What an acknowledged append returns: the entry is durable at ``seq``."""

    seq: int
    leaf_hash: bytes
    time: int


@dataclass(frozen=True)
class LedgerOptions:
    """Tuning; the defaults suit the embedded deployment."""

    checkpoint_every: int = 1000  # entries
    checkpoint_interval: float = 10.0  # seconds
    segment_entries: int = 1_000_000
    max_entry_bytes: int = entry.DEFAULT_MAX_ENTRY_BYTES
    lock_timeout: float = 30.0
    clock: Callable[[], int] = now_us


@dataclass
class _State:
    """What a writer knows about the tail of the log, valid while it holds the lock."""

    size: int
    prev: str
    last_time: int
    compact: merkle.CompactRange
    active_first: int
    active_end: int
    active_fd: int  # the active segment, open for appending while this state is current
    last_checkpoint: Checkpoint | None
    key: KeyRecord
    private: Ed25519PrivateKey


class Ledger:
    """An audit ledger in the folder ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], options: LedgerOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or LedgerOptions()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.path / "lock")
        self._mutex = threading.Lock()  # one commit per process at a time
        self._group: GroupCommit[Receipt] = GroupCommit(self._commit)
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closing = False
        self._state: _State | None = None
        self._key_cache: tuple[int, KeyRecord, Ed25519PrivateKey] | None = None
        self._pending_repairs: list[dict[str, Any]] = []
        if not (self.path / "LEDGER.json").exists():
            self._create()
        header = read_json(self.path / "LEDGER.json")
        if header.get("format") != LEDGER_FORMAT or header.get("v") != LEDGER_VERSION:
            raise LedgerDamaged(f"{self.path} is not an sbx ledger of a known version")
        self.ledger_id: str = header["ledger"]
        self.created: int = header["created"]
        self.segments = Segments(self.path / "segments")
        self.index = Index(self.path / "index")

    # ------------------------------------------------------------------ creation
    def _create(self) -> None:
        self._lock.acquire(self.options.lock_timeout)
        try:
            if (self.path / "LEDGER.json").exists():
                return
            # Nothing was ever acknowledged without LEDGER.json: clear a half-made ledger.
            for name in ("segments", "index", "keys"):
                folder = self.path / name
                if folder.exists():
                    for item in sorted(folder.rglob("*"), reverse=True):
                        item.rmdir() if item.is_dir() else item.unlink()
            for name in ("checkpoints.log",):
                (self.path / name).unlink(missing_ok=True)
            ledger_id = secrets.token_hex(16)
            created = self.options.clock()
            private = Ed25519PrivateKey.generate()
            record = new_key_record(
                private, ledger=ledger_id, created=created, from_size=1, previous=None
            )
            store_key(self.path / "keys", record, private)
            Segments(self.path / "segments").create(0)
            (self.path / "checkpoints.log").touch()
            genesis = entry.encode_body(
                action="ledger.create",
                actor=SYSTEM_ACTOR,
                system=True,
                object=f"ledger:{ledger_id}",
                outcome="ok",
                detail={"key": record.to_dict(), "ledger": ledger_id},
            )
            line = entry.seal_body(genesis, prev=entry.GENESIS_PREV, seq=0, time=created) + b"\n"
            seg = self.path / "segments" / f"{0:020d}.log"
            with open(seg, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            header = {
                "created": created,
                "format": LEDGER_FORMAT,
                "hash": "sha256",
                "ledger": ledger_id,
                "segment_entries": self.options.segment_entries,
                "v": LEDGER_VERSION,
            }
            write_atomic(self.path / "LEDGER.json", canonical.encode(header) + b"\n")
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ appending
    def append(
        self,
        *,
        action: str,
        actor: str,
        object: str,  # noqa: A002 - the entry field's name
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> Receipt:
        """Append one entry; return once it is durable. Raises :class:`InvalidEntry`
        (nothing written) or :class:`LedgerError` (not recorded; safe to retry)."""
        body = entry.encode_body(
            action=action,
            actor=actor,
            object=object,
            outcome=outcome,
            detail=detail,
            max_bytes=self.options.max_entry_bytes,
        )
        if self._ticker is None:
            self._start_ticker()
        return self._group.submit(body)

    def _start_ticker(self) -> None:
        """Sign a checkpoint when entries have waited ``checkpoint_interval`` unsigned,
        even if no further append comes to do it."""
        with self._mutex:
            if self._ticker is None and not self._closing:
                self._ticker = threading.Thread(
                    target=self._tick, name="ledger-ticker", daemon=True
                )
                self._ticker.start()

    def _tick(self) -> None:
        while not self._stopping.wait(self.options.checkpoint_interval / 2):
            self._checkpoint_if_stale()

    def append_many(self, entries: Iterable[dict[str, Any]]) -> list[Receipt]:
        """Append entries (each a mapping of :meth:`append`'s arguments) in one commit."""
        if self._closing:
            raise LedgerError("the ledger is closed")
        bodies = []
        for number, item in enumerate(entries):
            if not isinstance(item, dict):
                raise InvalidEntry(f"entry {number} of the batch is not a mapping")
            unknown = sorted(set(item) - set(entry.CALLER_FIELDS))
            missing = sorted({"action", "actor", "object"} - set(item))
            if unknown or missing:
                raise InvalidEntry(
                    f"entry {number} of the batch: unexpected entry fields {unknown}, "
                    f"missing {missing}"
                )
            fields = {"outcome": "ok", "detail": None, **item}
            bodies.append(entry.encode_body(max_bytes=self.options.max_entry_bytes, **fields))
        return self._commit(bodies) if bodies else []

    def _commit(self, bodies: list[bytes]) -> list[Receipt]:
        with self._mutex:
            self._lock.acquire(self.options.lock_timeout)
            try:
                state = self._sync()
                if self._pending_repairs:
                    repairs = [self._repair_body(r) for r in self._pending_repairs]
                    self._write(state, repairs)
                    self._pending_repairs.clear()
                receipts = self._write(state, bodies)
                if self._checkpoint_due(state):
                    self._write_checkpoint(state)
                return receipts
            finally:
                self._lock.release()

    def _write(self, state: _State, bodies: list[bytes]) -> list[Receipt]:
        receipts: list[Receipt] = []
        start = 0
        while start < len(bodies):
            room = self.options.segment_entries - (state.size - state.active_first)
            if room <= 0:
                self._seal_and_roll(state)
                continue
            chunk = bodies[start : start + room]
            receipts.extend(self._write_chunk(state, chunk))
            start += len(chunk)
        return receipts

    def _write_chunk(self, state: _State, bodies: list[bytes]) -> list[Receipt]:
        stamp = max(self.options.clock(), state.last_time)
        lines: list[bytes] = []
        batch = IndexBatch()
        receipts: list[Receipt] = []
        sha256 = hashlib.sha256
        size, prev, end, compact = state.size, state.prev, state.active_end, state.compact.copy()
        for body in bodies:
            line = entry.seal_body(body, prev=prev, seq=size, time=stamp)
            leaf = sha256(b"\x00" + line).digest()
            end += len(line) + 1
            batch.add(compact, leaf, end)
            receipts.append(Receipt(size, leaf, stamp))
            lines.append(line)
            prev = leaf.hex()
            size += 1
        lines.append(b"")
        fd = state.active_fd
        try:
            os.write(fd, b"\n".join(lines))
            os.fdatasync(fd)
        except OSError as exc:
            self._forget_state()  # re-read from disk next time
            try:
                os.truncate(self.segments.path(state.active_first), state.active_end)
            except OSError:
                raise LedgerDamaged(f"write failed and could not be undone: {exc}") from exc
            raise LedgerError(f"write failed, nothing recorded: {exc}") from exc
        batch.flush(self.index)
        state.size, state.prev, state.active_end, state.compact = size, prev, end, compact
        state.last_time = stamp
        return receipts

    def _seal_and_roll(self, state: _State) -> None:
        """Close the full active segment with a checkpoint at its exact end; start the next."""
        last = state.last_checkpoint
        checkpoint = last if last is not None and last.size == state.size else None
        if checkpoint is None:
            checkpoint = self._write_checkpoint(state)
        first = state.active_first
        seal = {
            "bytes": state.active_end,
            "checkpoint": checkpoint.to_dict(),
            "count": state.size - first,
            "first": first,
            "v": 1,
        }
        write_atomic(self.segments.seal_path(first), canonical.encode(seal) + b"\n", mode=0o444)
        os.chmod(self.segments.path(first), 0o444)
        os.close(state.active_fd)
        state.active_fd = os.open(self.segments.create(state.size), os.O_WRONLY | os.O_APPEND)
        state.active_first, state.active_end = state.size, 0

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_due(self, state: _State) -> bool:
        """At least every ``checkpoint_every`` entries or ``checkpoint_interval`` seconds."""
        unsigned = state.size - self._checkpointed_size(state)
        if unsigned >= self.options.checkpoint_every:
            return True
        # Entries after the last checkpoint are younger than it; before the first one,
        # the oldest unsigned entry is entry 0, written when the ledger was created.
        last = state.last_checkpoint.time if state.last_checkpoint else self.created
        return (
            unsigned > 0 and self.options.clock() - last >= self.options.checkpoint_interval * 1e6
        )

    @staticmethod
    def _checkpointed_size(state: _State) -> int:
        return state.last_checkpoint.size if state.last_checkpoint else 0

    def _write_checkpoint(self, state: _State) -> Checkpoint:
        # Another process may have signed one since this state was read: never go back.
        state.last_checkpoint = self._read_last_checkpoint() or state.last_checkpoint
        stamp = max(self.options.clock(), state.last_time)
        if state.last_checkpoint is not None:
            stamp = max(stamp, state.last_checkpoint.time)
        checkpoint = Checkpoint.signed(
            state.private,
            ledger=self.ledger_id,
            size=state.size,
            root=state.compact.root(),
            prev=state.last_checkpoint.digest() if state.last_checkpoint else FIRST_PREV,
            time=stamp,
            key_id=state.key.key_id,
        )
        line = checkpoint.encode() + b"\n"
        fd = os.open(self.path / "checkpoints.log", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self.index.fsync()
        state.last_checkpoint = checkpoint
        return checkpoint

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the current tree (or return the latest one if
        the tree has not grown since)."""
        self._drain()
        return self._checkpoint_now()

    def _checkpoint_now(self) -> Checkpoint:
        with self._mutex:
            self._lock.acquire(self.options.lock_timeout)
            try:
                state = self._sync()
                if self._pending_repairs:
                    self._write(state, [self._repair_body(r) for r in self._pending_repairs])
                    self._pending_repairs.clear()
                if state.last_checkpoint is not None and state.last_checkpoint.size == state.size:
                    return state.last_checkpoint
                return self._write_checkpoint(state)
            finally:
                self._lock.release()

    def _checkpoint_if_stale(self) -> None:
        state = self._state
        if state is not None and self._checkpoint_due(state):
            try:
                self._checkpoint_now()
            except LedgerError:
                pass  # the next commit or interval tries again

    def rotate_key(self) -> KeyRecord:
        """Replace the signing key. The old key signs a last checkpoint and endorses the
        new one; the rotation is an entry of its own; old checkpoints stay verifiable."""
        self._drain()
        with self._mutex:
            self._lock.acquire(self.options.lock_timeout)
            try:
                state = self._sync()
                if self._checkpointed_size(state) != state.size:
                    self._write_checkpoint(state)
                private = Ed25519PrivateKey.generate()
                record = new_key_record(
                    private,
                    ledger=self.ledger_id,
                    created=self.options.clock(),
                    from_size=state.size + 1,
                    previous=(state.key, state.private),
                )
                store_key(self.path / "keys", record, private)
                body = entry.encode_body(
                    action="ledger.key.rotate",
                    actor=SYSTEM_ACTOR,
                    system=True,
                    object=f"key:{record.key_id}",
                    outcome="ok",
                    detail={"key": record.to_dict(), "previous": state.key.key_id},
                )
                self._write(state, [body])
                state.key, state.private = record, private
                self._write_checkpoint(state)
                return record
            finally:
                self._lock.release()

    def signing_key(self) -> tuple[KeyRecord, Ed25519PrivateKey]:
        """The key that signs now (for documents the ledger vouches for, e.g. archives)."""
        self._drain()
        with self._mutex:
            self._lock.acquire(self.options.lock_timeout)
            try:
                state = self._sync()
                return state.key, state.private
            finally:
                self._lock.release()

    def export(self, first: int, last: int, destination: str | os.PathLike[str]) -> dict[str, Any]:
        """Write an archive of entries ``first..last``; see :mod:`audit.archive`."""
        from audit.archive import export_archive

        return export_archive(self, first, last, Path(destination))

    # ------------------------------------------------------------------ catching up
    def _sync(self) -> _State:
        """Bring this writer's view of the tail up to date (lock held)."""
        state = self._state
        if state is not None and self._unchanged(state):
            return state
        known = state.compact if state is not None else None
        self._forget_state()
        tail = recover_tail(self.path, self.segments, self.index, known)
        self._pending_repairs.extend(tail.repairs)
        size, prev, last_time, compact = tail.size, tail.prev, tail.last_time, tail.compact
        active_first = self.segments.firsts[-1]
        active_fd = os.open(self.segments.path(active_first), os.O_WRONLY | os.O_APPEND)
        active_end = os.fstat(active_fd).st_size
        last_checkpoint = self._read_last_checkpoint()
        key, private = self._active_key(size)
        self._state = _State(
            size=size,
            prev=prev,
            last_time=last_time,
            compact=compact,
            active_first=active_first,
            active_end=active_end,
            active_fd=active_fd,
            last_checkpoint=last_checkpoint,
            key=key,
            private=private,
        )
        return self._state

    def _unchanged(self, state: _State) -> bool:
        """Whether no other writer appended since this state was read (lock held)."""
        if os.fstat(state.active_fd).st_size != state.active_end:
            return False
        full = state.size - state.active_first >= self.options.segment_entries
        return not (full and self.segments.path(state.size).exists())

    def _read_last_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint on disk (lock held: a torn line is repaired)."""
        checkpoint, repair = read_last_checkpoint(self.path, repair=True)
        if repair is not None:
            self._pending_repairs.append(repair)
        return checkpoint

    def _active_key(self, size: int) -> tuple[KeyRecord, Ed25519PrivateKey]:
        """The signing key, re-read only when the key folder changed (a rotation)."""
        stamp = os.stat(self.path / "keys").st_mtime_ns
        cached = self._key_cache
        if cached is not None and cached[0] == stamp and cached[1].from_size <= size:
            return cached[1], cached[2]
        key, private = active_key(self.path / "keys", size, self.read_entry)
        self._key_cache = (stamp, key, private)
        return key, private

    def _forget_state(self) -> None:
        if self._state is not None:
            os.close(self._state.active_fd)
            self._state = None

    def _repair_body(self, detail: dict[str, Any]) -> bytes:
        return entry.encode_body(
            action="ledger.repair",
            actor=SYSTEM_ACTOR,
            system=True,
            object=f"segment:{detail['segment']}",
            outcome="repaired",
            detail=detail,
        )

    # ------------------------------------------------------------------ reading
    @property
    def size(self) -> int:
        """Number of entries indexed so far (an append's receipt is always within it)."""
        return self.index.count()

    def read_entry(self, seq: int) -> bytes:
        """The encoded entry at ``seq`` (without its newline)."""
        if not 0 <= seq < self.index.count():
            raise LedgerError(f"no entry {seq}: the ledger has {self.index.count()} entries")
        return read_entry(self.segments, self.index, seq)

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(seq, encoded entry)`` for ``start <= seq < stop``."""
        stop = self.index.count() if stop is None else min(stop, self.index.count())
        if start >= stop:
            return
        first = self.segments.first_of(start)
        offset = 0 if start == first else self.index.end_offset(start - 1)
        seq = start
        for _, line in self.segments.iter_lines(first, offset):
            if seq >= stop or not line.endswith(b"\n"):
                return
            yield seq, line[:-1]
            seq += 1

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first (a line still being written is not one yet)."""
        data = (self.path / "checkpoints.log").read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [Checkpoint.decode(line) for line in complete.split(b"\n") if line]

    def latest_checkpoint(self) -> Checkpoint | None:
        return read_last_checkpoint(self.path, repair=False)[0]

    def keychain(self) -> KeyChain:
        """The ledger's key chain, from the key files (the verifier reads it from entries)."""
        return keychain_from_files(self.path / "keys", self.ledger_id, self.size, self.read_entry)

    def verify(self, **options: Any) -> Report:
        """Verify this ledger's files from scratch; see :func:`audit.verify.verify`."""
        from audit.verify import verify

        self._drain()
        return verify(self.path, **options)

    # ------------------------------------------------------------------ proofs
    def prove_inclusion(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``seq`` is in the tree of a signed checkpoint (the latest one,
        or the one of ``tree_size``); writes a checkpoint first if none covers ``seq``."""
        checkpoint = self._checkpoint_covering(seq + 1, tree_size)
        path = merkle.inclusion_proof_from(self.index.node, seq, checkpoint.size)
        return InclusionProof(
            seq=seq,
            entry=self.read_entry(seq),
            leaf_hash=self.index.leaf(seq),
            path=path,
            checkpoint=checkpoint,
        )

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the tree of checkpoint size ``old_size`` is a prefix of ``new_size``'s."""
        old = self._checkpoint_of(old_size)
        new = self._checkpoint_covering(max(old_size, 1), new_size)
        path = merkle.consistency_proof_from(self.index.node, old.size, new.size)
        return ConsistencyProof(old=old, new=new, path=path)

    def _checkpoint_of(self, size: int) -> Checkpoint:
        for checkpoint in reversed(self.checkpoints()):
            if checkpoint.size == size:
                return checkpoint
        raise ProofError(
            f"there is no checkpoint of size {size}; see `sbx audit checkpoint --list`"
        )

    def _checkpoint_covering(self, size: int, tree_size: int | None) -> Checkpoint:
        if tree_size is not None:
            if tree_size < size:
                raise ProofError(f"a tree of size {tree_size} does not contain seq {size - 1}")
            return self._checkpoint_of(tree_size)
        if size > self.index.count() and size > self._writer_size():
            raise ProofError(f"no entry {size - 1}: the ledger has {self.index.count()} entries")
        latest = self.latest_checkpoint()
        if latest is None or latest.size < size:
            latest = self.checkpoint()
        return latest

    def _writer_size(self) -> int:
        self._drain()
        return self.index.count()

    # ------------------------------------------------------------------ lifecycle
    def _drain(self) -> None:
        """Wait until everything submitted so far is committed."""
        self._group.barrier()

    def close(self, *, checkpoint: bool = True) -> None:
        """Refuse new appends, commit what is queued, write a final checkpoint."""
        if self._closing:
            return
        self._group.close()
        self._closing = True
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join()
        if checkpoint and self._state is not None:
            try:
                self._checkpoint_now()
            except LedgerError:
                pass
        self._forget_state()
        self.index.close()
        self._lock.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
