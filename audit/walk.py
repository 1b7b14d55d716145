"""What verification reports: the first problem found, and the checkpoints it compares.

The walk itself is in :mod:`audit.scan`; the front-ends are :mod:`audit.verify` (a ledger
folder) and :mod:`audit.archive` (an archive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.checkpoint import Checkpoint


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong: an entry (``seq``) and/or a checkpoint."""

    reason: str
    seq: int | None = None
    checkpoint: int | None = None  # position in the checkpoint list, from 0

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "reason": self.reason, "seq": self.seq}

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        label = f"checkpoint #{self.checkpoint}"
        if self.checkpoint is not None and not self.reason.startswith((f"{label}:", f"{label} ")):
            where.append(label)
        if not where and self.checkpoint is not None:
            return self.reason  # it names the checkpoint itself
        return f"{', '.join(where) or 'ledger'}: {self.reason}"


class Failed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Scheduled:
    """A checkpoint to compare with the tree when the walk reaches its size."""

    checkpoint: Checkpoint
    position: int | None  # in the ledger's own list; None for a witnessed one
    label: str
