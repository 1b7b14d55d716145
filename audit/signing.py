"""Ed25519 keys: identifiers, key records, endorsements and domain-separated signatures.

A *key record* (FORMAT.md §5) is the public half of a signing key as the ledger keeps it::

    {"alg": "Ed25519", "created": <µs>, "from_size": <n>, "key_id": <hex>,
     "ledger": <ledger id>, "previous": <key id or null>, "public_key": <base64>,
     "v": 1, "endorsement": <base64 signature by the previous key, absent for the first>}

``key_id`` is the lowercase hex SHA-256 of the raw 32-byte public key, so an identifier
cannot be re-pointed at another key. Each key after the first is endorsed by the key it
replaces; the old key may sign checkpoints up to ``from_size`` of its successor, no further.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import canonical
from audit.errors import KeyringError

ALGORITHM = "Ed25519"
KEY_RECORD_VERSION = 1

# Every signed message starts with one of these, so a signature made for one purpose
# can never be replayed as another.
DOMAIN_CHECKPOINT = b"sbx/checkpoint/v1\n"
DOMAIN_ENDORSEMENT = b"sbx/key-endorsement/v1\n"
DOMAIN_MANIFEST = b"sbx/archive-manifest/v1\n"


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyringError(f"{what} is not valid base64") from None


def sign(private: Ed25519PrivateKey, domain: bytes, body: dict[str, Any]) -> str:
    """Base64 Ed25519 signature over ``domain || canonical(body)``."""
    return b64encode(private.sign(domain + canonical.encode(body)))


def check_signature(
    public: Ed25519PublicKey, domain: bytes, body: dict[str, Any], sig: Any
) -> bool:
    try:
        raw = b64decode(sig, "signature")
    except KeyringError:
        return False
    try:
        public.verify(raw, domain + canonical.encode(body))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class KeyRecord:
    """The public record of one signing key."""

    key_id: str
    ledger: str
    public_key: bytes
    created: int
    from_size: int
    previous: str | None
    endorsement: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "alg": ALGORITHM,
            "created": self.created,
            "from_size": self.from_size,
            "key_id": self.key_id,
            "ledger": self.ledger,
            "previous": self.previous,
            "public_key": b64encode(self.public_key),
            "v": KEY_RECORD_VERSION,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.body()
        if self.endorsement is not None:
            data["endorsement"] = self.endorsement
        return data

    @classmethod
    def from_dict(cls, data: Any) -> KeyRecord:
        if not isinstance(data, dict):
            raise KeyringError("a key record must be a JSON object")
        expected = {
            "alg",
            "created",
            "from_size",
            "key_id",
            "ledger",
            "previous",
            "public_key",
            "v",
        }
        if not expected <= set(data) <= expected | {"endorsement"}:
            raise KeyringError("a key record has missing or unknown members")
        if data["alg"] != ALGORITHM or data["v"] != KEY_RECORD_VERSION:
            raise KeyringError(f"unsupported key algorithm or version: {data['alg']} v{data['v']}")
        raw = b64decode(data["public_key"], "public_key")
        if len(raw) != 32:
            raise KeyringError("an Ed25519 public key is 32 bytes")
        if key_id_of(raw) != data["key_id"]:
            raise KeyringError(f"key id {data['key_id']} does not match its public key")
        for name in ("created", "from_size"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 0:
                raise KeyringError(f"{name} must be a non-negative integer")
        if data["previous"] is not None and not isinstance(data["previous"], str):
            raise KeyringError("previous must be a key id or null")
        return cls(
            key_id=data["key_id"],
            ledger=str(data["ledger"]),
            public_key=raw,
            created=data["created"],
            from_size=data["from_size"],
            previous=data["previous"],
            endorsement=data.get("endorsement"),
        )

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


def new_key_record(
    private: Ed25519PrivateKey,
    *,
    ledger: str,
    created: int,
    from_size: int,
    previous: tuple[KeyRecord, Ed25519PrivateKey] | None,
) -> KeyRecord:
    """The record of ``private``'s public key, endorsed by ``previous`` if given."""
    raw = public_raw(private.public_key())
    record = KeyRecord(
        key_id=key_id_of(raw),
        ledger=ledger,
        public_key=raw,
        created=created,
        from_size=from_size,
        previous=previous[0].key_id if previous else None,
    )
    if previous is None:
        return record
    endorsement = sign(previous[1], DOMAIN_ENDORSEMENT, record.body())
    return KeyRecord(**{**record.__dict__, "endorsement": endorsement})


class KeyChain:
    """The ordered keys of one ledger, checked link by link.

    ``add`` accepts the first key only if it is trusted (pinned by the caller, or taken
    on first use when nothing is pinned) and every later key only if the key before it
    endorsed it. ``check_signer`` says whether a key may sign a checkpoint of a size.
    """

    def __init__(self, ledger: str, trusted: set[str] | None = None) -> None:
        self.ledger = ledger
        self.trusted = trusted
        self.records: list[KeyRecord] = []
        self._by_id: dict[str, int] = {}

    def add(self, record: KeyRecord) -> None:
        if record.key_id in self._by_id:
            if self.records[self._by_id[record.key_id]] != record:
                raise KeyringError(f"key {record.key_id[:16]}… appears with two different records")
            return
        if record.ledger != self.ledger:
            raise KeyringError(f"key {record.key_id[:16]}… belongs to another ledger")
        if not self.records:
            if record.previous is not None:
                raise KeyringError(f"first key {record.key_id[:16]}… claims a predecessor")
            if self.trusted is not None and record.key_id not in self.trusted:
                raise KeyringError(f"first key {record.key_id[:16]}… is not a trusted key")
        else:
            last = self.records[-1]
            if record.previous != last.key_id:
                raise KeyringError(
                    f"key {record.key_id[:16]}… does not follow key {last.key_id[:16]}…"
                )
            if record.from_size < last.from_size:
                raise KeyringError(f"key {record.key_id[:16]}… starts before its predecessor")
            if not check_signature(
                last.verifier(), DOMAIN_ENDORSEMENT, record.body(), record.endorsement
            ):
                raise KeyringError(f"key {record.key_id[:16]}… is not endorsed by its predecessor")
        self._by_id[record.key_id] = len(self.records)
        self.records.append(record)

    def get(self, key_id: str) -> KeyRecord | None:
        index = self._by_id.get(key_id)
        return None if index is None else self.records[index]

    def signer_for(self, key_id: str, size: int) -> KeyRecord:
        """The record of ``key_id`` if it may sign a checkpoint of ``size``, else raise."""
        index = self._by_id.get(key_id)
        if index is None:
            raise KeyringError(f"checkpoint signed by unknown key {key_id[:16]}…")
        record = self.records[index]
        if size < record.from_size:
            raise KeyringError(f"key {key_id[:16]}… was not active yet at size {size}")
        if index + 1 < len(self.records) and size >= self.records[index + 1].from_size:
            raise KeyringError(
                f"key {key_id[:16]}… was retired at size {self.records[index + 1].from_size}"
            )
        return record
