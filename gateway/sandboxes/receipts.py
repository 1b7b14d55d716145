"""Ledger positions for the entries a job records.

The write queue appends a batch's entries once, for every job in it, and answers the
jobs afterwards. A job that must tell its caller where its entry is in the ledger (the
executed-code record answers with the entry's sequence number) records a
:class:`Receipted` entry; :class:`ReceiptingSink`, the ledger sink of the gateway's write
queue, writes the sequence number into the entry's :class:`Slot` once the entry is
durable. A job applied twice (its batch retried one job at a time) fills a new slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from audit import Ledger


@dataclass
class Slot:
    seq: int | None = None


class Receipted(dict[str, Any]):
    """Entry fields with the slot their sequence number goes into."""

    def __init__(self, fields: dict[str, Any], slot: Slot) -> None:
        super().__init__(fields)
        self.slot = slot


class Preparer(Protocol):
    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]: ...


class ReceiptingSink:
    """An audit sink writing to ``ledger``, with the entries prepared by ``context`` (the
    gateway's :class:`~gateway.api.context.LedgerSink`, which adds the request), that fills
    the slots of receipted entries once they are durable."""

    def __init__(self, ledger: Ledger, context: Preparer) -> None:
        self.ledger = ledger
        self.context = context

    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]:
        prepared = self.context.prepare(fields)
        if isinstance(fields, Receipted) and not isinstance(prepared, Receipted):
            return Receipted(prepared, fields.slot)
        return prepared

    def append(self, fields: dict[str, Any]) -> None:
        receipt = self.ledger.append(**fields)
        if isinstance(fields, Receipted):
            fields.slot.seq = receipt.seq

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        receipts = self.ledger.append_many(entries)
        for fields, receipt in zip(entries, receipts, strict=True):
            if isinstance(fields, Receipted):
                fields.slot.seq = receipt.seq
