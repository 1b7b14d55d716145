"""Self-contained archives of a range of the ledger (FORMAT.md §7).

An archive is a POSIX tar file (optionally gzip-compressed) holding, under ``sbx-archive/``::

    MANIFEST.json     what is inside, the hashes that join the range to the whole tree,
                      file digests, and a signature by the ledger's key (always first)
    LEDGER.json       the ledger's header
    keys/<id>.json    every key record of the ledger's key chain
    checkpoints.log   the checkpoints inside the range and the one that covers its end
    entries/<first>.log  the entries, as they are in the segments

It verifies with ``python -m audit.verify ARCHIVE`` anywhere, with no access to the ledger.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from audit import canonical, merkle
from audit.checkpoint import Checkpoint
from audit.errors import ArchiveError, KeyringError
from audit.scan import TASK_BYTES, Assembler, walk_range
from audit.signing import DOMAIN_MANIFEST, KeyChain, KeyRecord, check_signature, sign
from audit.walk import Failed, Problem, Scheduled

if TYPE_CHECKING:
    from audit.ledger import Ledger
    from audit.verify import Report

ARCHIVE_FORMAT = "sbx-archive"
ARCHIVE_VERSION = 1
ROOT = "sbx-archive"
_MAX_META_BYTES = 64 << 20


def _compact_to_json(compact: merkle.CompactRange) -> list[list[Any]]:
    return [[level, value.hex()] for level, value in compact.hashes]


def _compact_from_json(value: Any, begin: int, what: str) -> merkle.CompactRange:
    compact = merkle.CompactRange(begin)
    if not isinstance(value, list):
        raise ArchiveError(f"manifest {what} must be a list")
    try:
        for level, text in value:
            node = bytes.fromhex(text)
            if len(node) != merkle.HASH_SIZE or not isinstance(level, int) or not 0 <= level < 64:
                raise ValueError
            compact.append_subtree(level, node)
    except (TypeError, ValueError):
        raise ArchiveError(f"manifest {what} holds a malformed hash") from None
    return compact


def _member_order(name: str) -> tuple[int, str]:
    """Metadata first (keys before checkpoints), entries last, so a reader streams once."""
    rank = {"LEDGER.json": 0, "checkpoints.log": 2}.get(name, 1 if name.startswith("keys/") else 3)
    return rank, name


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{ROOT}/{name}")
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def export_archive(ledger: Ledger, first: int, last: int, destination: Path) -> dict[str, Any]:
    """Write entries ``first..last`` (inclusive) with everything needed to verify them
    against the first checkpoint past ``last`` (signed now if there is none yet).
    Returns the manifest."""
    if not 0 <= first <= last:
        raise ArchiveError(f"cannot export seq {first}..{last}: the range is empty or negative")
    # The first checkpoint past the range (FORMAT.md §7.1): every checkpoint the archive
    # holds is then one the verifier can check against the entries or the boundary hashes.
    cover = next((cp for cp in ledger.checkpoints() if cp.size > last), None)
    if cover is None:
        cover = ledger._checkpoint_covering(last + 1, None)  # noqa: SLF001 - same package
    if last >= cover.size:
        raise ArchiveError(f"no entry {last}: the ledger has {cover.size} entries")
    left = ledger.index.compact_range(first)
    right = merkle.CompactRange(last + 1)
    for level, index in merkle.decompose(last + 1, cover.size):
        right.append_subtree(level, ledger.index.node(level, index))
    checkpoints = [cp for cp in ledger.checkpoints() if first < cp.size <= cover.size]
    files: dict[str, bytes] = {
        "LEDGER.json": (ledger.path / "LEDGER.json").read_bytes(),
        "checkpoints.log": b"".join(cp.encode() + b"\n" for cp in checkpoints),
    }
    chain = ledger.keychain()
    for record in chain.records:
        files[f"keys/{record.key_id}.json"] = canonical.encode(record.to_dict()) + b"\n"
    chunks: dict[int, list[bytes]] = {}
    for seq, line in ledger.entries(first, last + 1):
        chunks.setdefault(ledger.segments.first_of(seq), []).append(line + b"\n")
    for segment_first, lines in chunks.items():
        files[f"entries/{max(segment_first, first):020d}.log"] = b"".join(lines)
    signer, private = ledger.signing_key()
    body = {
        "checkpoint": cover.to_dict(),
        "created": ledger.options.clock(),
        "entries": {"count": last - first + 1, "first": first, "last": last},
        "files": [
            {"bytes": len(data), "name": name, "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        ],
        "format": ARCHIVE_FORMAT,
        "key_id": signer.key_id,
        "ledger": ledger.ledger_id,
        "left": _compact_to_json(left),
        "right": _compact_to_json(right),
        "v": ARCHIVE_VERSION,
    }
    manifest = {**body, "sig": sign(private, DOMAIN_MANIFEST, body)}
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.partial")
    compress = destination.name.endswith((".gz", ".tgz"))
    tar = (
        tarfile.open(temporary, "w:gz", format=tarfile.PAX_FORMAT)
        if compress
        else tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT)
    )
    with tar:
        _add(tar, "MANIFEST.json", canonical.encode(manifest) + b"\n")
        for name in sorted(files, key=_member_order):
            _add(tar, name, files[name])
    temporary.replace(destination)
    return manifest


class _Members:
    """Reads an archive's members in order, checking names and digests against the manifest."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.iterator = iter(tar)

    def next(self) -> tuple[str, IO[bytes]] | None:
        member = next(self.iterator, None)
        if member is None:
            return None
        if not member.isfile() or not member.name.startswith(f"{ROOT}/") or ".." in member.name:
            raise ArchiveError(f"unexpected archive member {member.name!r}")
        handle = self.tar.extractfile(member)
        if handle is None:
            raise ArchiveError(f"cannot read archive member {member.name!r}")
        return member.name[len(ROOT) + 1 :], handle


def _read_small(handle: IO[bytes], name: str) -> bytes:
    data = handle.read(_MAX_META_BYTES + 1)
    if len(data) > _MAX_META_BYTES:
        raise ArchiveError(f"{name} is too large for a metadata file")
    return data


def _digesting_chunks(handle: IO[bytes], digest: Any, size: int) -> Iterator[bytes]:
    """Chunks of whole lines (the last may be cut off), hashing every byte read."""
    rest = b""
    while chunk := handle.read(min(size, 1 << 20) or 1):
        digest.update(chunk)
        rest += chunk
        if len(rest) >= size:
            cut = rest.rfind(b"\n") + 1
            if cut:
                yield rest[:cut]
                rest = rest[cut:]
    if rest:
        yield rest


def verify_archive(
    path: Path,
    report: Report,
    trusted: set[str] | None,
    witnessed: list[Checkpoint],
    deep: bool,
    progress: Callable[[int, int], None] | None,
) -> None:
    from audit.verify import checkpoint_chain_break, read_checkpoint_lines, trust_statement

    with tarfile.open(path, "r:*") as tar:
        members = _Members(tar)
        first_member = members.next()
        if first_member is None or first_member[0] != "MANIFEST.json":
            raise Failed(Problem("the archive does not start with MANIFEST.json"))
        manifest = canonical.decode(_read_small(first_member[1], "MANIFEST.json").rstrip(b"\n"))
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != ARCHIVE_FORMAT
            or manifest.get("v") != ARCHIVE_VERSION
        ):
            raise Failed(Problem("MANIFEST.json is not an sbx archive manifest of version 1"))
        try:
            ledger_id = str(manifest["ledger"])
            span = manifest["entries"]
            first, last = int(span["first"]), int(span["last"])
            cover = Checkpoint.from_dict(manifest["checkpoint"])
            expected = {f["name"]: (int(f["bytes"]), str(f["sha256"])) for f in manifest["files"]}
            left = _compact_from_json(manifest["left"], 0, "left")
            right = _compact_from_json(manifest["right"], last + 1, "right")
        except (KeyError, TypeError, ValueError) as exc:
            raise Failed(Problem(f"MANIFEST.json is incomplete: {exc}")) from None
        if left.end != first or right.end != cover.size:
            raise Failed(Problem("MANIFEST.json's boundary hashes do not fit its range"))
        report.ledger, report.first_seq = ledger_id, first
        total = sum(size for name, (size, _) in expected.items() if name.startswith("entries/"))
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, total)

        seen: dict[str, tuple[int, str]] = {}
        records: list[KeyRecord] = []
        checkpoints: list[Checkpoint] = []
        assembler: Assembler | None = None
        keys = KeyChain(ledger_id, trusted)
        while (item := members.next()) is not None:
            name, handle = item
            if name in seen or name not in expected:
                raise Failed(Problem(f"archive member {name} is not in the manifest or repeated"))
            if name.startswith("entries/"):
                if assembler is None:
                    assembler = _start(keys, records, manifest, checkpoints, cover, witnessed, left)
                    boundaries = assembler.boundaries()
                digest = hashlib.sha256()
                start_bytes = assembler.byte_count
                expected_first: int | None = _first_seq_of(name)
                for chunk in _digesting_chunks(handle, digest, TASK_BYTES):
                    result = walk_range(chunk, boundaries, deep)
                    if result.torn and result.problem is None:
                        result.problem = Problem(
                            "entry is cut off (no final newline)", result.size or None
                        )
                    assembler.add(result, expected_first=expected_first)
                    expected_first = None
                    advance(len(chunk))
                seen[name] = (assembler.byte_count - start_bytes, digest.hexdigest())
            else:
                data = _read_small(handle, name)
                seen[name] = (len(data), hashlib.sha256(data).hexdigest())
                if name.startswith("keys/"):
                    try:
                        records.append(KeyRecord.from_dict(canonical.decode(data.rstrip(b"\n"))))
                    except KeyringError as exc:
                        raise Failed(Problem(f"{name}: {exc}")) from None
                elif name == "checkpoints.log":
                    checkpoints = read_checkpoint_lines(data, name, report.warnings)
            if seen[name] != expected[name]:
                raise Failed(Problem(f"archive member {name} does not match the manifest's digest"))
        if set(seen) != set(expected):
            raise Failed(Problem(f"archive is missing {sorted(set(expected) - set(seen))}"))
        if assembler is None:
            raise Failed(Problem("the archive holds no entries"))
        if assembler.size != last + 1:
            raise Failed(
                Problem(f"the archive ends at seq {assembler.size - 1}, not {last}", assembler.size)
            )
        assembler.finish(right)
        if (chain_break := checkpoint_chain_break(checkpoints, complete=False)) is not None:
            raise Failed(chain_break)
    report.entries, report.bytes = last + 1, assembler.byte_count
    report.checkpoints = assembler.verified
    report.latest_checkpoint = cover.to_dict()
    report.trust = trust_statement(keys, trusted)


def _first_seq_of(name: str) -> int:
    stem = name[len("entries/") :].removesuffix(".log")
    if len(stem) != 20 or not stem.isdigit():
        raise Failed(Problem(f"archive member {name} is not named after its first seq"))
    return int(stem)


def _start(
    keys: KeyChain,
    records: list[KeyRecord],
    manifest: dict[str, Any],
    checkpoints: list[Checkpoint],
    cover: Checkpoint,
    witnessed: list[Checkpoint],
    left: merkle.CompactRange,
) -> Assembler:
    """Check the key chain and the manifest's signature; set up the checks of the range."""
    by_previous = {record.previous: record for record in records}
    record = by_previous.get(None)
    try:
        while record is not None:
            keys.add(record)
            record = by_previous.get(record.key_id)
    except KeyringError as exc:
        raise Failed(Problem(f"key chain: {exc}")) from None
    if len(keys.records) != len(records):
        raise Failed(Problem("some key records do not belong to the key chain"))
    signer = keys.get(str(manifest.get("key_id")))
    body = {k: v for k, v in manifest.items() if k != "sig"}
    if signer is None or not check_signature(
        signer.verifier(), DOMAIN_MANIFEST, body, manifest.get("sig")
    ):
        raise Failed(Problem("MANIFEST.json's signature does not verify with the ledger's keys"))
    if not checkpoints or checkpoints[-1] != cover:
        raise Failed(Problem("checkpoints.log does not end with the manifest's checkpoint"))
    schedule = [Scheduled(cp, n, f"checkpoint #{n}") for n, cp in enumerate(checkpoints)]
    schedule += [
        Scheduled(cp, None, "witnessed checkpoint")
        for cp in witnessed
        if left.end < cp.size <= cover.size
    ]
    return Assembler(keys, schedule, left)
