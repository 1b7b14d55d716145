"""Signed checkpoints: a statement by the ledger's key that its tree had a size and root.

Encoded (FORMAT.md §4) as one canonical JSON object per line::

    {"key_id": <hex>, "ledger": <id>, "prev": <hex>, "root": <hex>, "sig": <base64>,
     "size": <n>, "time": <µs>, "v": 1}

The signature covers ``"sbx/checkpoint/v1\\n" || canonical(object without "sig")``.
``prev`` is the SHA-256 of the checkpoint line before it (64 zeros for the first), so
the checkpoint log is a chain of its own: a checkpoint removed from it is noticed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import canonical
from audit.errors import LedgerError
from audit.signing import DOMAIN_CHECKPOINT, KeyChain, check_signature, sign

CHECKPOINT_VERSION = 1
FIRST_PREV = "0" * 64
_MEMBERS = {"key_id", "ledger", "prev", "root", "sig", "size", "time", "v"}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class CheckpointError(LedgerError):
    """A checkpoint is malformed or its signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    ledger: str
    size: int
    root: bytes
    time: int
    key_id: str
    prev: str = FIRST_PREV
    sig: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "ledger": self.ledger,
            "prev": self.prev,
            "root": self.root.hex(),
            "size": self.size,
            "time": self.time,
            "v": CHECKPOINT_VERSION,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "sig": self.sig}

    def encode(self) -> bytes:
        return canonical.encode(self.to_dict())

    def digest(self) -> str:
        """What the next checkpoint's ``prev`` must be."""
        return hashlib.sha256(self.encode()).hexdigest()

    @classmethod
    def signed(
        cls,
        private: Ed25519PrivateKey,
        *,
        ledger: str,
        size: int,
        root: bytes,
        time: int,
        key_id: str,
        prev: str,
    ) -> Checkpoint:
        unsigned = cls(ledger=ledger, size=size, root=root, time=time, key_id=key_id, prev=prev)
        return cls(
            **{**unsigned.__dict__, "sig": sign(private, DOMAIN_CHECKPOINT, unsigned.body())}
        )

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict) or set(data) != _MEMBERS:
            raise CheckpointError(f"a checkpoint must have exactly {', '.join(sorted(_MEMBERS))}")
        if data["v"] != CHECKPOINT_VERSION:
            raise CheckpointError(f"unknown checkpoint version {data['v']!r}")
        for name in ("size", "time"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 0:
                raise CheckpointError(f"checkpoint {name} must be a non-negative integer")
        for name in ("root", "key_id", "prev"):
            if not isinstance(data[name], str) or not _HEX64.match(data[name]):
                raise CheckpointError(f"checkpoint {name} must be 64 lowercase hex digits")
        if not isinstance(data["ledger"], str) or not isinstance(data["sig"], str):
            raise CheckpointError("checkpoint ledger and sig must be strings")
        return cls(
            ledger=data["ledger"],
            size=data["size"],
            root=bytes.fromhex(data["root"]),
            time=data["time"],
            key_id=data["key_id"],
            prev=data["prev"],
            sig=data["sig"],
        )

    @classmethod
    def decode(cls, line: bytes) -> Checkpoint:
        try:
            return cls.from_dict(canonical.decode_canonical(line))
        except canonical.CanonicalError as exc:
            raise CheckpointError(f"checkpoint is not canonical JSON: {exc}") from None

    def check(self, keys: KeyChain) -> None:
        """Raise unless this checkpoint is for ``keys``' ledger and signed by a key that
        was allowed to sign a tree of this size."""
        if self.ledger != keys.ledger:
            raise CheckpointError(f"checkpoint is for ledger {self.ledger}, not {keys.ledger}")
        record = keys.signer_for(self.key_id, self.size)
        if not check_signature(record.verifier(), DOMAIN_CHECKPOINT, self.body(), self.sig):
            raise CheckpointError(f"checkpoint of size {self.size} has a bad signature")
