"""The ledger's files on disk (FORMAT.md §6): segments, checkpoints, keys and the index.

The segments and ``checkpoints.log`` are the record. Everything under ``index/`` is
derived from the segments, written after the segment data is durable, and rebuilt from
them whenever it is short or inconsistent — it makes proofs and look-ups fast, it is
never trusted by the verifier.

Index files are arrays of fixed-width records: ``leaves.bin`` (32-byte leaf hash per
entry), ``offsets.bin`` (8-byte big-endian end offset of each entry within its segment)
and ``nodes-LL.bin`` (32-byte roots of the perfect subtrees of ``2**LL`` leaves, for LL a
positive multiple of :data:`NODE_LEVEL_STEP`). Any other node is folded from at most
``2**(NODE_LEVEL_STEP-1)`` stored ones.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audit import merkle
from audit.checkpoint import Checkpoint, CheckpointError
from audit.errors import LedgerBusy, LedgerDamaged

NODE_LEVEL_STEP = 8
SEGMENT_SUFFIX = ".log"
SEAL_SUFFIX = ".seal"
_OFFSET = struct.Struct(">Q")
_READ_CHUNK = 1 << 20


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` durably: temporary file, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


class FileLock:
    """An exclusive ``flock`` on a file: one writer at a time across processes.

    A contended lock is waited for with a *blocking* ``flock``, which the kernel hands to
    waiters in turn (polling would let the process that just released it win again and
    again). The blocking call runs in a helper thread so that the caller can give up after
    ``timeout``; a helper that gets the lock after its caller gave up releases it at once.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self, timeout: float) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        decided = threading.Lock()
        outcome = {"acquired": False, "abandoned": False}
        done = threading.Event()

        def wait_for_lock() -> None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with decided:
                if outcome["abandoned"]:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                else:
                    outcome["acquired"] = True
            done.set()

        threading.Thread(target=wait_for_lock, name="ledger-lock", daemon=True).start()
        done.wait(timeout)
        with decided:
            if outcome["acquired"]:
                return
            outcome["abandoned"] = True
        raise LedgerBusy(f"the ledger stayed locked for {timeout:g} s")

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class _Array:
    """An append-only file of fixed-width records."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.width = width
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def count(self) -> int:
        return os.fstat(self.fd).st_size // self.width

    def read(self, index: int, count: int = 1) -> bytes:
        data = os.pread(self.fd, self.width * count, self.width * index)
        if len(data) != self.width * count:
            raise LedgerDamaged(f"{self.path.name} has no record {index + count - 1}")
        return data

    def append(self, data: bytes) -> None:
        if data:
            os.write(self.fd, data)

    def truncate(self, count: int) -> None:
        os.ftruncate(self.fd, count * self.width)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Index:
    """Leaf hashes, entry offsets and stored subtree roots (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.leaves = _Array(folder / "leaves.bin", merkle.HASH_SIZE)
        self.offsets = _Array(folder / "offsets.bin", _OFFSET.size)
        self._levels: dict[int, _Array] = {}

    def level(self, level: int) -> _Array:
        if level == 0:
            return self.leaves
        array = self._levels.get(level)
        if array is None:
            array = _Array(self.folder / f"nodes-{level:02d}.bin", merkle.HASH_SIZE)
            self._levels[level] = array
        return array

    def count(self) -> int:
        return min(self.leaves.count(), self.offsets.count())

    def leaf(self, seq: int) -> bytes:
        return self.leaves.read(seq)

    def end_offset(self, seq: int) -> int:
        value: int = _OFFSET.unpack(self.offsets.read(seq))[0]
        return value

    def node(self, level: int, index: int) -> bytes:
        """Root of the perfect subtree ``(level, index)``; it must be complete."""
        base = level - level % NODE_LEVEL_STEP
        if base == level:
            return self.level(level).read(index)
        span = 1 << (level - base)
        data = self.level(base).read(index * span, span)
        hashes = [data[i : i + merkle.HASH_SIZE] for i in range(0, len(data), merkle.HASH_SIZE)]
        while len(hashes) > 1:
            hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def compact_range(self, size: int) -> merkle.CompactRange:
        """The compact range ``[0, size)`` read from stored nodes."""
        compact = merkle.CompactRange()
        for level, index in merkle.decompose(0, size):
            compact.append_subtree(level, self.node(level, index))
        return compact

    def append(self, leaves: list[bytes], ends: list[int], nodes: list[tuple[int, bytes]]) -> None:
        """Append records in an order that keeps :meth:`normalise` able to repair a crash."""
        for level, node in nodes:
            self.level(level).append(node)
        self.leaves.append(b"".join(leaves))
        self.offsets.append(b"".join(_OFFSET.pack(end) for end in ends))

    def normalise(self) -> int:
        """Cut every file back to the entries all of them agree on; return that count.

        A writer killed half-way through :meth:`append` leaves files of different lengths
        or a partial record; this restores a consistent prefix (never longer than the
        log, which :class:`audit.ledger.Ledger` then re-indexes)."""
        count = self.count()
        for array in (self.leaves, self.offsets):
            if os.fstat(array.fd).st_size != count * array.width:
                array.truncate(count)
        level = NODE_LEVEL_STEP
        while True:
            path = self.folder / f"nodes-{level:02d}.bin"
            wanted = count >> level
            if not wanted and not path.exists():
                break
            array = self.level(level)
            if os.fstat(array.fd).st_size != array.count() * array.width or array.count() > wanted:
                array.truncate(min(array.count(), wanted))
            for index in range(array.count(), wanted):
                array.append(self._fold(level, index))
            level += NODE_LEVEL_STEP
        return count

    def _fold(self, level: int, index: int) -> bytes:
        below = level - NODE_LEVEL_STEP
        span = 1 << NODE_LEVEL_STEP
        data = self.level(below).read(index * span, span)
        hashes = [data[i : i + merkle.HASH_SIZE] for i in range(0, len(data), merkle.HASH_SIZE)]
        while len(hashes) > 1:
            hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def truncate(self, count: int) -> None:
        self.leaves.truncate(count)
        self.offsets.truncate(count)
        for level, array in self._levels.items():
            array.truncate(min(array.count(), count >> level))

    def fsync(self) -> None:
        for array in (self.leaves, self.offsets, *self._levels.values()):
            array.fsync()

    def close(self) -> None:
        for array in (self.leaves, self.offsets, *self._levels.values()):
            array.close()
        self._levels.clear()


class IndexBatch:
    """Index records for entries being appended, written to the index in one go."""

    __slots__ = ("ends", "leaves", "nodes")

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.ends: list[int] = []
        self.nodes: list[tuple[int, bytes]] = []

    def keep_node(self, level: int, index: int, node: bytes) -> None:
        if level % NODE_LEVEL_STEP == 0:
            self.nodes.append((level, node))

    def add(self, compact: merkle.CompactRange, leaf: bytes, end: int) -> None:
        """Append ``leaf`` (ending at byte ``end`` of its segment) to ``compact``."""
        compact.append(leaf, self.keep_node)
        self.leaves.append(leaf)
        self.ends.append(end)

    def flush(self, index: Index) -> None:
        index.append(self.leaves, self.ends, self.nodes)
        self.leaves, self.ends, self.nodes = [], [], []


class Segments:
    """The segment files: where each entry's bytes are."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.firsts: list[int] = []
        self.refresh()

    def refresh(self) -> None:
        firsts = []
        for path in self.folder.iterdir():
            if path.suffix == SEGMENT_SUFFIX and path.stem.isdigit() and len(path.stem) == 20:
                firsts.append(int(path.stem))
        self.firsts = sorted(firsts)

    def path(self, first: int) -> Path:
        return self.folder / segment_name(first)

    def seal_path(self, first: int) -> Path:
        return self.folder / f"{first:020d}{SEAL_SUFFIX}"

    def first_of(self, seq: int) -> int:
        """First seq of the segment holding ``seq``."""
        position = bisect.bisect_right(self.firsts, seq) - 1
        if position < 0:
            raise LedgerDamaged(f"no segment holds seq {seq}")
        return self.firsts[position]

    def create(self, first: int) -> Path:
        path = self.path(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        fsync_dir(self.folder)
        self.refresh()
        return path

    def iter_lines(self, first_seq: int = 0, start_offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(segment first seq, line with its newline)`` from ``first_seq``'s segment
        at ``start_offset`` to the end of the log, reading in large chunks."""
        position = bisect.bisect_right(self.firsts, first_seq) - 1
        for index, first in enumerate(self.firsts[max(position, 0) :]):
            offset = start_offset if index == 0 else 0
            with open(self.path(first), "rb") as handle:
                handle.seek(offset)
                rest = b""
                while chunk := handle.read(_READ_CHUNK):
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        yield first, line + b"\n"
                if rest:
                    yield first, rest


def quarantine_torn_tail(root: Path, segment: Path, offset: int, seq: int | None) -> dict[str, Any]:
    """Move an incomplete final line (a writer died mid-write) from ``segment`` (or the
    checkpoint log) into ``root/repairs/``; return the detail of the ``ledger.repair``
    entry to record. ``seq``: the seq the line would have had, if it was an entry."""
    with open(segment, "rb") as handle:
        handle.seek(offset)
        torn = handle.read()
    repairs = root / "repairs"
    repairs.mkdir(exist_ok=True)
    digest = hashlib.sha256(torn).hexdigest()
    saved = repairs / f"{segment.stem}-{offset}-{digest[:16]}.bin"
    write_atomic(saved, torn)
    os.truncate(segment, offset)
    with opened(segment, os.O_RDONLY) as fd:
        os.fsync(fd)
    return {
        "at_seq": seq,
        "bytes": len(torn),
        "offset": offset,
        "saved_as": f"repairs/{saved.name}",
        "segment": segment.name,
        "sha256": digest,
        "what": "incomplete final line removed",
    }


def read_last_checkpoint(
    root: Path, *, repair: bool
) -> tuple[Checkpoint | None, dict[str, Any] | None]:
    """The last checkpoint in ``root/checkpoints.log``, read from the end of the file.

    With ``repair`` (a writer holding the lock), an incomplete final line — never a signed
    statement — is moved aside and the detail of that repair returned as well."""
    path = root / "checkpoints.log"
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        window = 8192
        while True:
            start = max(0, size - window)
            handle.seek(start)
            tail = handle.read()
            if start == 0 or tail.count(b"\n") >= 2:
                break
            window *= 4
    repaired = None
    if tail and not tail.endswith(b"\n"):
        keep = start + tail.rfind(b"\n") + 1
        if repair:
            repaired = quarantine_torn_tail(root, path, keep, None)
        tail = tail[: keep - start]
    lines = tail.split(b"\n")
    if len(lines) < 2 or (start > 0 and len(lines) < 3):
        return None, repaired
    try:
        return Checkpoint.decode(lines[-2]), repaired
    except CheckpointError as exc:
        raise LedgerDamaged(
            f"{path}: the last checkpoint cannot be read ({exc}); "
            "`verify` reports the first position that is wrong"
        ) from None


@contextlib.contextmanager
def opened(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)
