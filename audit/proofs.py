"""Inclusion and consistency proofs as documents a third party can check on their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit import merkle
from audit.checkpoint import Checkpoint
from audit.errors import ProofError
from audit.signing import KeyChain


def _hexes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise ProofError(f"{what} must be a list of hex hashes")
    try:
        return [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise ProofError(f"{what} must be a list of hex hashes") from None


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``seq`` (its exact bytes) is leaf ``seq`` of the checkpoint's tree."""

    seq: int
    entry: bytes
    leaf_hash: bytes
    path: list[bytes]
    checkpoint: Checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint.to_dict(),
            "entry": self.entry.decode("utf-8"),
            "leaf_hash": self.leaf_hash.hex(),
            "path": [h.hex() for h in self.path],
            "seq": self.seq,
            "tree_size": self.checkpoint.size,
            "type": "inclusion",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InclusionProof:
        try:
            return cls(
                seq=int(data["seq"]),
                entry=str(data["entry"]).encode("utf-8"),
                leaf_hash=bytes.fromhex(data["leaf_hash"]),
                path=_hexes(data["path"], "path"),
                checkpoint=Checkpoint.from_dict(data["checkpoint"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProofError(f"not an inclusion proof: {exc}") from None

    def verify(self, keys: KeyChain | None = None) -> None:
        """Raise :class:`ProofError` unless the entry hashes to the leaf, the path leads to
        the checkpoint's root and (given ``keys``) the checkpoint's signature holds."""
        if merkle.leaf_hash(self.entry) != self.leaf_hash:
            raise ProofError("the entry does not hash to the leaf hash")
        merkle.verify_inclusion(
            self.leaf_hash, self.seq, self.checkpoint.size, self.path, self.checkpoint.root
        )
        if keys is not None:
            self.checkpoint.check(keys)


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old`` is a prefix of the tree of ``new``: nothing was rewritten."""

    old: Checkpoint
    new: Checkpoint
    path: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "new": self.new.to_dict(),
            "old": self.old.to_dict(),
            "path": [h.hex() for h in self.path],
            "type": "consistency",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsistencyProof:
        try:
            return cls(
                old=Checkpoint.from_dict(data["old"]),
                new=Checkpoint.from_dict(data["new"]),
                path=_hexes(data["path"], "path"),
            )
        except (KeyError, TypeError) as exc:
            raise ProofError(f"not a consistency proof: {exc}") from None

    def verify(self, keys: KeyChain | None = None) -> None:
        merkle.verify_consistency(
            self.old.size, self.new.size, self.old.root, self.new.root, self.path
        )
        if keys is not None:
            self.old.check(keys)
            self.new.check(keys)
