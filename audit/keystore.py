"""Where a ledger keeps its keys: ``keys/<key id>.json`` (public key records) and
``keys/private/<key id>.pem`` (PKCS#8, owner-only, never exported).

A key record on disk is not yet a key of the ledger: a rotation writes the new record
first and then the entry that introduces it, so a crash in between leaves a record that
no entry names. Such an orphan is ignored; only records introduced by an entry count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import canonical, entry
from audit.errors import InvalidEntry, KeyringError
from audit.signing import KeyChain, KeyRecord
from audit.store import write_atomic


def store_key(folder: Path, record: KeyRecord, private: Ed25519PrivateKey) -> None:
    """Write a new key's private half (mode 0600) and its public record, durably."""
    (folder / "private").mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder / "private", 0o700)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(folder / "private" / f"{record.key_id}.pem", pem, mode=0o600)
    write_atomic(folder / f"{record.key_id}.json", canonical.encode(record.to_dict()) + b"\n")


def load_records(folder: Path) -> list[KeyRecord]:
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(KeyRecord.from_dict(json.loads(path.read_bytes())))
        except ValueError:
            raise KeyringError(f"key file {path.name} is not valid JSON") from None
    return records


def _successors(records: list[KeyRecord]) -> dict[str | None, list[KeyRecord]]:
    by_previous: dict[str | None, list[KeyRecord]] = {}
    for record in records:
        by_previous.setdefault(record.previous, []).append(record)
    return by_previous


def introduced_chain(
    folder: Path, size: int, read_entry: Callable[[int], bytes]
) -> list[KeyRecord]:
    """The key records, first to newest, that entries of the first ``size`` entries
    introduce (``ledger.create`` for the first, ``ledger.key.rotate`` for the others)."""
    by_previous = _successors(load_records(folder))
    chain: list[KeyRecord] = []
    previous: str | None = None
    while True:
        introduced = None
        for candidate in by_previous.get(previous, []):
            if candidate.from_size > size:
                continue
            try:
                value = entry.parse(read_entry(candidate.from_size - 1))
            except InvalidEntry:
                continue
            if value["detail"].get("key", {}).get("key_id") == candidate.key_id:
                introduced = candidate
                break
        if introduced is None:
            break
        chain.append(introduced)
        previous = introduced.key_id
    if not chain:
        raise KeyringError("no key record matches the key the ledger's first entry introduces")
    return chain


def active_key(
    folder: Path, size: int, read_entry: Callable[[int], bytes]
) -> tuple[KeyRecord, Ed25519PrivateKey]:
    """The newest introduced key and its private half."""
    record = introduced_chain(folder, size, read_entry)[-1]
    pem = folder / "private" / f"{record.key_id}.pem"
    try:
        private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyringError(
            f"the private key of the active key {record.key_id[:16]}… is missing"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyringError("the active private key is not an Ed25519 key")
    return record, private


def keychain_from_files(
    folder: Path, ledger_id: str, size: int, read_entry: Callable[[int], bytes]
) -> KeyChain:
    """A checked :class:`KeyChain` of the introduced keys."""
    chain = KeyChain(ledger_id)
    for record in introduced_chain(folder, size, read_entry):
        chain.add(record)
    return chain


def load_or_create_private(
    path: Path, on_create: Callable[[Ed25519PrivateKey], None]
) -> Ed25519PrivateKey:
    """The Ed25519 key kept at ``path`` (PKCS#8, 0600), made on first use: ``on_create``
    is told of a new key (to publish its public half) before the key is written, so no
    key is ever used whose publication failed."""
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise KeyringError(f"{path} is not an Ed25519 key")
        return loaded
    private = Ed25519PrivateKey.generate()
    on_create(private)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, mode=0o600)
    return private
