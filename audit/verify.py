"""Verify a ledger folder or an archive, trusting nothing in it but the mathematics.

Usage: ``python -m audit.verify PATH [--trusted-key KEY_ID]... [--witness FILE]...
[--deep] [--json]``. Exit status 0: intact; 1: a problem (the first one is printed with
its position); 2: the path cannot be read at all. Needs only the standard library and
``cryptography``.

What is checked (FORMAT.md §8): every entry's chain fields (seq without gaps, prev equal
to the previous entry's leaf hash, time never decreasing); every checkpoint's signature,
by a key of the ledger's endorsed key chain that was allowed to sign that size, and its
root against the Merkle tree of the entries; checkpoints that a witness holds
(``--witness``) the same way, which exposes a ledger rolled back or forked after the
witness saw it; seals; key files against the key chain recorded in the entries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import canonical, merkle, scan
from audit.checkpoint import FIRST_PREV, Checkpoint, CheckpointError
from audit.errors import KeyringError, LedgerError
from audit.scan import Assembler, plan_tasks, progress_adapter, run_tasks
from audit.signing import KeyChain, KeyRecord
from audit.walk import Failed, Problem, Scheduled

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``."""

MAX_WORKERS = 8
PARALLEL_MIN_BYTES = 64 << 20  # below this, starting worker processes costs more than it saves


@dataclass
class Report:
    """The outcome of a verification."""

    path: str
    kind: str  # "ledger" or "archive"
    ok: bool
    ledger: str | None = None
    first_seq: int = 0
    entries: int = 0
    checkpoints: int = 0
    bytes: int = 0
    seconds: float = 0.0
    latest_checkpoint: dict[str, Any] | None = None
    trust: str = ""
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "checkpoints_verified": self.checkpoints,
            "entries": self.entries,
            "first_seq": self.first_seq,
            "kind": self.kind,
            "latest_checkpoint": self.latest_checkpoint,
            "ledger": self.ledger,
            "ok": self.ok,
            "path": self.path,
            "problem": None if self.problem is None else self.problem.to_dict(),
            "seconds": round(self.seconds, 3),
            "trust": self.trust,
            "warnings": self.warnings,
        }


def checkpoint_chain_break(checkpoints: list[Checkpoint], *, complete: bool) -> Problem | None:
    """The first checkpoint out of order with the one before it (a smaller size or time,
    or another root for the same size) or whose ``prev`` is not the digest of the one
    before it. With ``complete`` (a whole log, not an archive's excerpt) the first must
    start the chain. Checked after the walk, which has by then vouched for every
    checkpoint present (signature and root), so that a checkpoint altered in place is
    reported as itself rather than as its neighbour being out of order; a break left
    then means one was removed, or the log reordered."""
    for number, checkpoint in enumerate(checkpoints):
        if number == 0:
            if complete and checkpoint.prev != FIRST_PREV:
                return Problem("checkpoints before the first one in the log were removed", None, 0)
            continue
        previous = checkpoints[number - 1]
        if (
            checkpoint.size < previous.size
            or checkpoint.time < previous.time
            or (checkpoint.size == previous.size and checkpoint.root != previous.root)
        ):
            return Problem(
                "checkpoint out of order or contradicting the one before it", None, number
            )
        if checkpoint.prev != previous.digest():
            return Problem(
                "the checkpoint log lost the checkpoint before this one (removed or reordered)",
                None,
                number,
            )
    return None


def read_checkpoint_lines(data: bytes, label: str, warnings: list[str]) -> list[Checkpoint]:
    """Parse a checkpoint log; an incomplete final line is a warning, anything else fatal.
    Their order is checked by :func:`checkpoint_chain_break`, after their signatures."""
    lines = data.split(b"\n")
    if lines and lines[-1]:
        warnings.append(f"{label}: incomplete final line ignored (a writer stopped mid-write)")
    checkpoints = []
    for number, line in enumerate(lines[:-1]):
        try:
            checkpoints.append(Checkpoint.decode(line))
        except CheckpointError as exc:
            raise Failed(Problem(f"{label} line {number + 1}: {exc}", None, number)) from None
    return checkpoints


def read_witnessed(paths: Iterable[str | os.PathLike[str]]) -> list[Checkpoint]:
    """Checkpoints from files a witness kept (one canonical JSON checkpoint per line)."""
    found: list[Checkpoint] = []
    for path in paths:
        for line in Path(path).read_bytes().splitlines():
            if line.strip():
                found.append(Checkpoint.decode(line.strip()))
    return found


def verify(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[str] | None = None,
    witnessed: Sequence[Checkpoint] = (),
    deep: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Report:
    """Verify the ledger folder or archive at ``path``. Never raises for a bad ledger:
    the report says what is wrong and where. ``workers``: processes for a ledger folder
    (default: one per core, up to 8, for ledgers of 64 MiB and more)."""
    target = Path(path)
    kind = "archive" if target.is_file() else "ledger"
    report = Report(path=str(target), kind=kind, ok=False)
    started = time.perf_counter()
    trusted = set(trusted_keys) if trusted_keys else None
    try:
        if kind == "archive":
            from audit.archive import verify_archive

            verify_archive(target, report, trusted, list(witnessed), deep, progress)
        else:
            _verify_folder(target, report, trusted, list(witnessed), deep, progress, workers)
        report.ok = True
    except Failed as failure:
        report.problem = failure.problem
    except (LedgerError, OSError, ValueError, tarfile.TarError) as exc:
        report.problem = Problem(f"cannot be read: {exc}")
    report.seconds = time.perf_counter() - started
    return report


def _verify_folder(
    folder: Path,
    report: Report,
    trusted: set[str] | None,
    witnessed: list[Checkpoint],
    deep: bool,
    progress: Progress | None,
    workers: int | None,
) -> None:
    if not (folder / "LEDGER.json").is_file():
        raise Failed(Problem(f"{folder} is not a ledger (no LEDGER.json)"))
    header = canonical.decode((folder / "LEDGER.json").read_bytes().rstrip(b"\n"))
    if not isinstance(header, dict) or header.get("format") != "sbx-ledger" or header.get("v") != 1:
        raise Failed(Problem("LEDGER.json is not an sbx ledger header of version 1"))
    ledger_id = str(header["ledger"])
    report.ledger = ledger_id
    keys = KeyChain(ledger_id, trusted)
    checkpoints = read_checkpoint_lines(
        (folder / "checkpoints.log").read_bytes(), "checkpoints.log", report.warnings
    )
    schedule = [Scheduled(cp, n, f"checkpoint #{n}") for n, cp in enumerate(checkpoints)]
    schedule += [Scheduled(cp, None, "witnessed checkpoint") for cp in witnessed]
    segments_dir = folder / "segments"
    for seal_path in sorted(segments_dir.glob("*.seal")):
        seal = canonical.decode(seal_path.read_bytes().rstrip(b"\n"))
        schedule.append(
            Scheduled(Checkpoint.from_dict(seal["checkpoint"]), None, f"seal {seal_path.name}")
        )
    segments = sorted((str(p), int(p.name[:-4])) for p in segments_dir.glob("*.log"))
    tasks = plan_tasks(segments, scan.TASK_BYTES)
    total = sum(task.end - task.start for task in tasks)
    advance = progress_adapter(progress, total)
    assembler = Assembler(keys, schedule)
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if total >= PARALLEL_MIN_BYTES else 1
    results = run_tasks(tasks, assembler.boundaries(), deep, workers)
    for number, (task, result) in enumerate(results):
        if result.torn and number == len(tasks) - 1:
            report.warnings.append(
                f"{Path(task.path).name}: incomplete final line of {result.torn} bytes ignored "
                "(never acknowledged; removed and recorded on the next write)"
            )
        elif result.torn and result.problem is None:
            result.problem = Problem("entry is cut off (no final newline)", result.size or None)
        try:
            assembler.add(result, expected_first=task.segment_first if task.start == 0 else None)
        except Failed as failure:
            raise Failed(
                _locate(folder, failure.problem, assembler.last_good_size, checkpoints)
            ) from None
        if task.last_in_segment and assembler.pending is None:  # else the link decides first
            _check_seal(Path(task.path), task.segment_first, assembler.size, task.end)
        advance(task.end - task.start)
    assembler.finish()
    if (chain_break := checkpoint_chain_break(checkpoints, complete=True)) is not None:
        raise Failed(chain_break)
    _check_key_files(folder / "keys", keys)
    if assembler.size > assembler.last_good_size:
        report.warnings.append(
            f"entries {assembler.last_good_size}..{assembler.size - 1} are chained but not yet "
            "covered by a checkpoint"
        )
    report.entries = assembler.size
    report.bytes = assembler.byte_count
    report.checkpoints = assembler.verified
    report.latest_checkpoint = checkpoints[-1].to_dict() if checkpoints else None
    report.trust = trust_statement(keys, trusted)


def _check_seal(segment: Path, first: int, end: int, size: int) -> None:
    seal_path = segment.with_suffix(".seal")
    if not seal_path.exists():
        return
    seal = canonical.decode(seal_path.read_bytes().rstrip(b"\n"))
    if seal.get("first") != first or seal.get("count") != end - first or seal.get("bytes") != size:
        raise Failed(
            Problem(
                f"segment {segment.name} does not match its seal (entries or bytes changed)",
                first + min(int(seal.get("count", 0)), end - first),
            )
        )


def _check_key_files(keys_dir: Path, keys: KeyChain) -> None:
    for path in sorted(keys_dir.glob("*.json")):
        try:
            record = KeyRecord.from_dict(json.loads(path.read_bytes()))
        except (KeyringError, ValueError) as exc:
            raise Failed(Problem(f"key file {path.name} is invalid: {exc}")) from None
        known = keys.get(record.key_id)
        if known is not None and known != record:
            raise Failed(
                Problem(f"key file {path.name} differs from the key recorded in the ledger")
            )
        if known is None and record.from_size <= 1:
            raise Failed(Problem(f"key file {path.name} is not a key the ledger records"))


def _locate(
    folder: Path, problem: Problem, last_good_size: int, checkpoints: list[Checkpoint]
) -> Problem:
    """Narrow a checkpoint that fails (its root, or its signature when the entry that
    introduced its key was altered) down to the first entry whose hash differs from the
    one the index recorded when it was written (the index is a hint, never trusted)."""
    if problem.checkpoint is None or not (folder / "index" / "leaves.bin").exists():
        return problem
    if problem.seq is not None:
        stop = problem.seq + 1
    elif problem.checkpoint < len(checkpoints):
        stop = checkpoints[problem.checkpoint].size
    else:
        return problem
    start = last_good_size
    index_path = folder / "index" / "leaves.bin"
    try:
        with open(index_path, "rb") as index:
            index.seek(start * merkle.HASH_SIZE)
            for seq, line in entries_between(folder, start, stop):
                stored = index.read(merkle.HASH_SIZE)
                if len(stored) == merkle.HASH_SIZE and stored != merkle.leaf_hash(line):
                    return Problem(
                        f"entry altered (its hash differs from the one recorded when "
                        f"it was written); {problem.reason}",
                        seq,
                        problem.checkpoint,
                    )
    except OSError:
        return problem
    return problem


def entries_between(folder: Path, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    paths = sorted((folder / "segments").glob("*.log"))
    for number, path in enumerate(paths):
        if number + 1 < len(paths) and int(paths[number + 1].name[:-4]) <= start:
            continue
        seq = int(path.name[:-4])
        with open(path, "rb") as handle:
            for line in handle:
                if start <= seq < stop:
                    yield seq, line.rstrip(b"\n")
                seq += 1
                if seq >= stop:
                    return


def trust_statement(keys: KeyChain, trusted: set[str] | None) -> str:
    if not keys.records:
        return "no keys"
    first = keys.records[0].key_id
    if trusted is not None:
        return f"first key {first} is pinned"
    return f"first key {first} taken on trust (pin it with --trusted-key)"


def _print_progress() -> Progress:
    state = {"shown": -1}

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != state["shown"]:
            state["shown"] = percent
            print(f"\rverifying… {percent:3d}%", end="", file=sys.stderr, flush=True)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify", description="Verify an sbx ledger folder or archive."
    )
    parser.add_argument("path", help="ledger folder or archive (.tar, .tar.gz)")
    parser.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEY_ID",
        help="key id the ledger's first key must be (repeatable)",
    )
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="FILE",
        help="file of checkpoints seen earlier; detects rollback and forks",
    )
    parser.add_argument("--deep", action="store_true", help="also parse every entry in full")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not os.path.exists(args.path):
        print(f"error: {args.path} does not exist", file=sys.stderr)
        return 2
    try:
        witnessed = read_witnessed(args.witness)
    except (OSError, LedgerError) as exc:
        print(f"error: cannot read witness file: {exc}", file=sys.stderr)
        return 2
    interactive = sys.stderr.isatty() and not args.json
    report = verify(
        args.path,
        trusted_keys=args.trusted_key or None,
        witnessed=witnessed,
        deep=args.deep,
        progress=_print_progress() if interactive else None,
    )
    if interactive:
        print("\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def format_report(report: Report) -> str:
    lines = []
    if report.ok:
        lines.append(f"OK: {report.kind} {report.path} is intact")
    else:
        lines.append(f"FAILED: {report.kind} {report.path}")
        if report.problem is not None:
            if report.problem.seq is not None:
                lines.append(f"  first bad seq: {report.problem.seq}")
            lines.append(f"  why: {report.problem}")
    if report.ledger:
        lines.append(f"  ledger: {report.ledger}")
    if report.ok:
        rate = report.entries / report.seconds if report.seconds else 0
        lines.append(
            f"  entries: {report.first_seq}..{report.entries - 1} "
            f"({report.entries - report.first_seq:,} verified, {rate:,.0f}/s)"
        )
        lines.append(f"  checkpoints verified: {report.checkpoints}")
        lines.append(f"  trust: {report.trust}")
    lines.extend(f"  warning: {w}" for w in report.warnings)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
