"""Exceptions raised by the ledger.

Every error the ledger raises derives from :class:`LedgerError`, so callers can catch one
type; the subclasses say what kind of thing went wrong::

    LedgerError
    ├── InvalidEntry          input refused before anything was written (bad JSON,
    │                         floats, oversized, unknown fields)
    ├── LedgerBusy            the ledger could not be locked in time
    ├── LedgerDamaged         the ledger on disk is not in a state it can write to
    ├── KeyringError          signing keys missing, unknown or unusable
    ├── ProofError            a Merkle proof does not verify, or cannot be produced
    └── ArchiveError          an archive is malformed or incomplete

Verification failures are not exceptions: :func:`audit.verify.verify` returns a report
with the first bad position, because "this ledger is broken at seq 4711" is an answer,
not an accident.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by :mod:`audit`."""


class InvalidEntry(LedgerError, ValueError):
    """An entry was refused; nothing was written."""


class LedgerBusy(LedgerError):
    """Another writer held the ledger lock for longer than the timeout."""


class LedgerDamaged(LedgerError):
    """The files on disk are damaged beyond a torn tail; run ``verify`` for the position."""


class KeyringError(LedgerError):
    """A signing or verification key is missing, unknown or malformed."""


class ProofError(LedgerError):
    """A Merkle proof is invalid or cannot be built for the requested sizes."""


class ArchiveError(LedgerError):
    """An archive is malformed, incomplete or does not match its manifest."""
