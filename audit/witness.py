"""Witness a ledger: keep the checkpoints it signs and check, run after run, that it only
ever grew (FORMAT.md §8.2).

Usage: ``python -m audit.witness FILE (--ledger DIR | --url URL) [--trusted-key KEY_ID]
[--token-env NAME] [--ca-file PEM] [--timeout SECONDS] [--json]``. Needs only the
standard library and ``cryptography``.

``FILE`` holds the checkpoints witnessed so far, one canonical checkpoint per line — the
file ``python -m audit.verify --witness FILE`` reads — and ``FILE.pin`` the ledger id
and first key id pinned at the first run. Each run fetches the ledger's latest
checkpoint and key chain, checks the chain from the pinned first key and the
checkpoint's signature, proves the last witnessed checkpoint consistent with the new one
(RFC 9162) and appends the new one to ``FILE``.

Sources (:mod:`audit.witness_sources`): a ledger folder (``--ledger``, only read: a live
ledger, a copy, a backup) or a gateway (``--url https://…``, ``GET /api/v1/ledger/…``
with the personal API token found in the environment variable ``--token-env``;
certificates verified, against ``--ca-file`` if given).

Exit status (:class:`Outcome`): 0 witnessed (or nothing new), 2 the witness's own files
or arguments are unusable, 3 the source cannot be read, 4 a bad signature (checkpoint or
key chain), 5 the first key or the ledger is not the pinned one, 6 rollback, 7 fork.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from pathlib import Path
from typing import Any

from audit import canonical
from audit.checkpoint import Checkpoint, CheckpointError
from audit.errors import KeyringError, LedgerError, ProofError
from audit.proofs import ConsistencyProof
from audit.signing import KeyChain, KeyRecord
from audit.store import write_atomic
from audit.verify import read_witnessed, trust_statement
from audit.witness_sources import (
    TOKEN_ENV,
    NoCheckpoint,
    ProofUnavailable,
    Source,
    SourceUnreachable,
    open_source,
)

PIN_SUFFIX = ".pin"
PIN_VERSION = 1
CHINA = timezone(timedelta(hours=8))  # China has kept UTC+8 without daylight saving since 1991
_KEY_ID = re.compile(r"[0-9a-f]{64}\Z")


class Outcome(IntEnum):
    """A run's verdict; its value is the exit status."""

    OK = 0
    UNUSABLE = 2  # the witness file, its pin or the arguments
    UNREACHABLE = 3
    BAD_SIGNATURE = 4
    KEY_CHANGED = 5
    ROLLBACK = 6
    FORK = 7

    @property
    def label(self) -> str:
        return {
            Outcome.OK: "OK",
            Outcome.UNUSABLE: "ERROR",
            Outcome.UNREACHABLE: "UNREACHABLE",
            Outcome.BAD_SIGNATURE: "BAD SIGNATURE",
            Outcome.KEY_CHANGED: "FIRST KEY CHANGED",
            Outcome.ROLLBACK: "ROLLBACK",
            Outcome.FORK: "FORK",
        }[self]


class _Stop(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


# ------------------------------------------------------------------ the witness's files
@dataclass(frozen=True)
class Pin:
    """What the first run pinned: the ledger and its first key (``FILE.pin``)."""

    ledger: str
    first_key: str
    on_trust: bool  # taken as seen, not given with --trusted-key

    def encode(self) -> bytes:
        body = {
            "first_key": self.first_key,
            "ledger": self.ledger,
            "on_trust": self.on_trust,
            "v": PIN_VERSION,
        }
        return canonical.encode(body) + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Pin:
        value = canonical.decode_canonical(data.rstrip(b"\n"))
        if (
            not isinstance(value, dict)
            or set(value) != {"first_key", "ledger", "on_trust", "v"}
            or value["v"] != PIN_VERSION
            or not isinstance(value["first_key"], str)
            or not _KEY_ID.match(value["first_key"])
            or not isinstance(value["ledger"], str)
            or not isinstance(value["on_trust"], bool)
        ):
            raise ValueError("not a pin of version 1")
        return cls(value["ledger"], value["first_key"], value["on_trust"])


def pin_path(path: Path) -> Path:
    return path.with_name(path.name + PIN_SUFFIX)


def _load_pin(path: Path) -> Pin | None:
    try:
        data = pin_path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Stop(Outcome.UNUSABLE, f"cannot read {pin_path(path)}: {exc}") from None
    try:
        return Pin.decode(data)
    except (ValueError, LedgerError) as exc:
        raise _Stop(Outcome.UNUSABLE, f"{pin_path(path)} is not a witness's pin: {exc}") from None


def _load_witnessed(path: Path) -> list[Checkpoint]:
    try:
        witnessed = read_witnessed([path])
    except (OSError, LedgerError) as exc:
        raise _Stop(Outcome.UNUSABLE, f"{path} is not a witness file: {exc}") from None
    if len({checkpoint.ledger for checkpoint in witnessed}) > 1:
        raise _Stop(Outcome.UNUSABLE, f"{path} holds checkpoints of more than one ledger")
    return witnessed


def _open_locked(path: Path) -> int:
    """The witness file, open for appending and locked against a concurrent run."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise _Stop(Outcome.UNUSABLE, f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _Stop(Outcome.UNUSABLE, f"another witness run is using {path}") from None
    return fd


def _record(
    fd: int, path: Path, pin: Pin, pinned_before: Pin | None, new: Checkpoint | None
) -> None:
    """Pin first (a checkpoint is never kept without the key it was checked with), then
    append the checkpoint, if any, and synchronise it."""
    try:
        if pin != pinned_before:
            write_atomic(pin_path(path), pin.encode())
        if new is not None:
            os.write(fd, new.encode() + b"\n")
            os.fsync(fd)
    except OSError as exc:
        raise _Stop(Outcome.UNUSABLE, f"cannot write beside {path}: {exc}") from None


# ------------------------------------------------------------------ witnessing
@dataclass
class Report:
    """What one run found; ``outcome`` is the exit status."""

    outcome: Outcome
    message: str
    source: str
    witness_file: str
    ledger: str | None = None
    previous: Checkpoint | None = None  # the newest checkpoint witnessed before this run
    latest: Checkpoint | None = None  # the ledger's latest checkpoint, once checked
    appended: bool = False
    trust: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "appended": self.appended,
            "exit": int(self.outcome),
            "latest": None if self.latest is None else self.latest.to_dict(),
            "ledger": self.ledger,
            "message": self.message,
            "outcome": self.outcome.name.lower(),
            "previous": None if self.previous is None else self.previous.to_dict(),
            "source": self.source,
            "trust": self.trust,
            "witness_file": self.witness_file,
        }


def witness(
    source: Source, path: str | os.PathLike[str], *, trusted_key: str | None = None
) -> Report:
    """One witnessing run (FORMAT.md §8.2) of ``source`` into the witness file ``path``.
    Never raises for what it finds: the report says what and the outcome how bad."""
    file = Path(path)
    report = Report(Outcome.OK, "", source.describe(), str(file))
    fd: int | None = None
    try:
        if trusted_key is not None and not _KEY_ID.match(trusted_key):
            raise _Stop(Outcome.UNUSABLE, "--trusted-key must be a key id: 64 hex digits")
        fd = _open_locked(file)
        _run(source, file, fd, trusted_key, report)
    except _Stop as stop:
        report.outcome, report.message = stop.outcome, stop.message
    finally:
        if fd is not None:
            os.close(fd)
    return report


def _run(source: Source, file: Path, fd: int, trusted_key: str | None, report: Report) -> None:
    pinned = _load_pin(file)
    witnessed = _load_witnessed(file)
    if pinned is not None and trusted_key is not None and trusted_key != pinned.first_key:
        raise _Stop(
            Outcome.UNUSABLE,
            f"--trusted-key {trusted_key} is not the key pinned in {pin_path(file)} "
            f"({pinned.first_key}); remove that file to pin another",
        )
    previous = max(witnessed, key=lambda checkpoint: checkpoint.size, default=None)
    report.previous = previous
    known_ledger = pinned.ledger if pinned is not None else previous.ledger if previous else None
    if pinned is not None and previous is not None and previous.ledger != pinned.ledger:
        raise _Stop(Outcome.UNUSABLE, f"{file} and its pin name different ledgers")

    # The checkpoint before the keys: a rotation in between cannot leave its signer out.
    try:
        latest = Checkpoint.from_dict(source.checkpoint())
        keys = source.keys()
    except KeyringError as exc:
        raise _Stop(Outcome.BAD_SIGNATURE, f"the key chain: {exc}") from None
    except SourceUnreachable as exc:
        raise _Stop(Outcome.UNREACHABLE, str(exc)) from None
    except NoCheckpoint as exc:
        if previous is None:
            raise _Stop(Outcome.UNREACHABLE, f"nothing to witness yet: {exc}") from None
        raise _Stop(
            Outcome.ROLLBACK,
            f"the ledger has no checkpoint at all, but this witness saw size {previous.size} "
            f"({_when(previous)}): entries 0 … {previous.size - 1} are gone ({exc})",
        ) from None
    except CheckpointError as exc:
        raise _Stop(
            Outcome.UNREACHABLE, f"the source's answer is not a checkpoint: {exc}"
        ) from None
    ledger, chain = _key_chain(keys, pinned, trusted_key, known_ledger)
    report.ledger = ledger
    pin = pinned or Pin(ledger, chain.records[0].key_id, on_trust=trusted_key is None)
    if pin.on_trust and trusted_key is not None:  # confirmed now
        pin = Pin(pin.ledger, pin.first_key, on_trust=False)
    report.trust = trust_statement(chain, None if pin.on_trust else {pin.first_key})
    if pin.on_trust and pinned is not None:
        report.trust = (
            f"first key {pin.first_key} pinned at the first run, taken on trust then "
            "(confirm it with --trusted-key)"
        )
    try:
        latest.check(chain)
    except (CheckpointError, KeyringError) as exc:
        raise _Stop(
            Outcome.BAD_SIGNATURE, f"the latest checkpoint (size {latest.size}): {exc}"
        ) from None
    report.latest = latest

    if previous is None:
        _record(fd, file, pin, pinned, latest)
        report.appended = True
        report.message = f"first checkpoint witnessed: size {latest.size}, root {latest.root.hex()}"
        return
    if latest.size < previous.size:
        raise _Stop(
            Outcome.ROLLBACK,
            f"the ledger's latest checkpoint has size {latest.size}, below size "
            f"{previous.size} that this witness saw ({_when(previous)}): entries "
            f"{latest.size} … {previous.size - 1} were removed",
        )
    if latest.size == previous.size:
        if latest.root != previous.root:
            raise _Stop(Outcome.FORK, _other_root(previous, latest.root))
        _record(fd, file, pin, pinned, None)
        report.message = (
            f"no new entries: the latest checkpoint is still the one of size {latest.size} "
            f"witnessed before ({_when(previous)})"
        )
        return
    _check_consistency(source, chain, previous, latest)
    _record(fd, file, pin, pinned, latest)
    report.appended = True
    report.message = (
        f"witnessed the checkpoint of size {latest.size}: consistent with size "
        f"{previous.size} seen before ({_when(previous)}), {latest.size - previous.size} "
        "entries added, none changed"
    )


def _key_chain(
    keys: Any, pinned: Pin | None, trusted_key: str | None, known_ledger: str | None
) -> tuple[str, KeyChain]:
    """The source's key chain, checked link by link from the pinned (or given) first key."""
    if not isinstance(keys, dict) or not isinstance(keys.get("ledger"), str):
        raise _Stop(Outcome.UNREACHABLE, "the source's answer is not a key chain")
    ledger = str(keys["ledger"])
    if known_ledger is not None and ledger != known_ledger:
        raise _Stop(
            Outcome.KEY_CHANGED,
            f"the source is ledger {ledger}, but this witness has witnessed ledger "
            f"{known_ledger}: another ledger replaced it",
        )
    try:
        records = [KeyRecord.from_dict(record) for record in keys.get("keys") or []]
    except KeyringError as exc:
        raise _Stop(Outcome.BAD_SIGNATURE, f"the key chain: {exc}") from None
    if not records:
        raise _Stop(Outcome.BAD_SIGNATURE, "the key chain is empty")
    expected = pinned.first_key if pinned is not None else trusted_key
    first = records[0].key_id
    if expected is not None and first != expected:
        whose = "pinned" if pinned is not None else "given with --trusted-key"
        raise _Stop(
            Outcome.KEY_CHANGED,
            f"the ledger's first key is {first}, but the key {whose} is {expected}",
        )
    chain = KeyChain(ledger, None if expected is None else {expected})
    try:
        for record in records:
            chain.add(record)
    except KeyringError as exc:
        raise _Stop(Outcome.BAD_SIGNATURE, f"the key chain: {exc}") from None
    return ledger, chain


def _check_consistency(
    source: Source, chain: KeyChain, previous: Checkpoint, latest: Checkpoint
) -> None:
    """The tree the witness saw is a prefix of the latest one, proved by the source."""
    try:
        answer = source.consistency(previous.size, latest.size)
    except SourceUnreachable as exc:
        raise _Stop(Outcome.UNREACHABLE, str(exc)) from None
    except ProofUnavailable as exc:
        raise _Stop(
            Outcome.ROLLBACK,
            f"the ledger cannot prove that it still holds the checkpoint of size "
            f"{previous.size} this witness saw ({_when(previous)}): {exc}",
        ) from None
    what = f"the consistency proof from size {previous.size} to size {latest.size}"
    try:
        proof = ConsistencyProof.from_dict(answer)
    except (ProofError, CheckpointError) as exc:
        raise _Stop(Outcome.FORK, f"{what} is malformed: {exc}") from None
    if (proof.old.size, proof.new.size) != (previous.size, latest.size):
        raise _Stop(
            Outcome.FORK, f"{what} was answered for sizes {proof.old.size} → {proof.new.size}"
        )
    if proof.old.root != previous.root:
        raise _Stop(Outcome.FORK, _other_root(previous, proof.old.root))
    if proof.new.root != latest.root:
        raise _Stop(
            Outcome.FORK,
            f"the ledger signed two roots for size {latest.size}: {latest.root.hex()} and "
            f"{proof.new.root.hex()}",
        )
    try:
        previous.check(chain)
    except (CheckpointError, KeyringError) as exc:
        raise _Stop(
            Outcome.FORK,
            f"the ledger's key chain no longer vouches for the checkpoint of size "
            f"{previous.size} this witness saw: {exc}",
        ) from None
    try:  # against the witness's own copy of the old checkpoint, not the source's
        ConsistencyProof(old=previous, new=latest, path=proof.path).verify(chain)
    except (ProofError, CheckpointError, KeyringError) as exc:
        raise _Stop(Outcome.FORK, f"{what} fails: {exc}") from None


def _other_root(previous: Checkpoint, root: bytes) -> str:
    return (
        f"the ledger's tree of size {previous.size} has root {root.hex()}, but this witness "
        f"saw root {previous.root.hex()} ({_when(previous)}): the entries were rewritten"
    )


def _when(checkpoint: Checkpoint) -> str:
    return f"signed {china_time(checkpoint.time)}"


def china_time(microseconds: int) -> str:
    moment = datetime.fromtimestamp(microseconds / 1_000_000, tz=CHINA)
    return moment.isoformat(timespec="seconds")


# ------------------------------------------------------------------ command line
def format_report(report: Report) -> str:
    lines = [f"{report.outcome.label}: {report.message}", f"  source: {report.source}"]
    if report.ledger:
        lines.append(f"  ledger: {report.ledger}")
    for name, checkpoint in (("witnessed before", report.previous), ("latest", report.latest)):
        if checkpoint is not None:
            lines.append(
                f"  {name}: size {checkpoint.size}, root {checkpoint.root.hex()}, "
                f"{_when(checkpoint)}"
            )
    if report.trust:
        lines.append(f"  trust: {report.trust}")
    if report.appended:
        lines.append(f"  kept in: {report.witness_file}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.witness",
        description="Witness an sbx ledger: keep its signed checkpoints and detect "
        "rollback, forks and changed keys.",
    )
    parser.add_argument(
        "file", help="witness file: the checkpoints seen so far (FILE.pin beside it)"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ledger", metavar="DIR", help="a ledger folder (only read)")
    where.add_argument("--url", metavar="URL", help="a gateway, https://…")
    parser.add_argument(
        "--trusted-key", metavar="KEY_ID", help="the ledger's first key id (first run)"
    )
    parser.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        metavar="NAME",
        help=f"environment variable holding the API token (default {TOKEN_ENV})",
    )
    parser.add_argument("--ca-file", metavar="PEM", help="CA certificates to trust (PEM)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        source = open_source(
            ledger=args.ledger,
            url=args.url,
            token_env=args.token_env,
            ca_file=args.ca_file,
            timeout=args.timeout,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(Outcome.UNUSABLE)
    trusted = args.trusted_key.lower() if args.trusted_key else None
    report = witness(source, args.file, trusted_key=trusted)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return int(report.outcome)


if __name__ == "__main__":
    sys.exit(main())
