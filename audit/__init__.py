"""sbx's audit ledger: append-only, hash-chained, Merkle-tree checkpoints, proofs.

This package imports nothing else of sbx and needs only the standard library and
``cryptography``, so a regulator can run ``python -m audit.verify`` on its own.
The format is specified in ``audit/FORMAT.md``.
"""

from audit.checkpoint import Checkpoint
from audit.errors import (
    ArchiveError,
    InvalidEntry,
    KeyringError,
    LedgerBusy,
    LedgerDamaged,
    LedgerError,
    ProofError,
)
from audit.ledger import Ledger, LedgerOptions, Receipt
from audit.proofs import ConsistencyProof, InclusionProof

__all__ = [
    "ArchiveError",
    "Checkpoint",
    "ConsistencyProof",
    "InclusionProof",
    "InvalidEntry",
    "KeyringError",
    "Ledger",
    "LedgerBusy",
    "LedgerDamaged",
    "LedgerError",
    "LedgerOptions",
    "ProofError",
    "Receipt",
]
