"""What the export service answers with: plain frozen snapshots of an export, its files
and the people's steps, and the summary of the airlock's report the ledger keeps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import Export, ExportFile, ExportReview, ExportRisk, ExportStatus
from sandbox.airlock import CheckReport


@dataclass(frozen=True)
class Announced:
    """A file as the sandbox announces it before sending it."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class FileSnapshot:
    n: int
    name: str
    bytes: int
    sha256: str
    received: bool


@dataclass(frozen=True)
class ReviewSnapshot:
    stage: ExportStatus
    actor: str
    approve: bool
    risk: ExportRisk
    reasons: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": str(self.stage),
            "actor": self.actor,
            "approve": self.approve,
            "risk": str(self.risk),
            "reasons": self.reasons,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class ExportSnapshot:
    id: str
    grant_id: str
    organization_id: str
    requested_by: str
    description: str
    status: ExportStatus
    risk: ExportRisk
    level: str
    requested_at: datetime
    submitted_at: datetime | None
    decided_at: datetime | None
    manifest_sha256: str | None
    files: tuple[FileSnapshot, ...]
    reviews: tuple[ReviewSnapshot, ...]
    report: dict[str, Any] | None

    @property
    def findings(self) -> int:
        return len(self.report["findings"]) if self.report else 0

    @property
    def blocking(self) -> int:
        if not self.report:
            return 0
        return sum(1 for finding in self.report["findings"] if finding["severity"] == "block")

    @property
    def console_path(self) -> str:
        return f"/exports/{self.id}"


def export_snapshot(session: Session, row: Export) -> ExportSnapshot:
    files = session.scalars(
        select(ExportFile).where(ExportFile.export_id == row.id).order_by(ExportFile.n)
    )
    reviews = session.scalars(
        select(ExportReview).where(ExportReview.export_id == row.id).order_by(ExportReview.id)
    )
    return ExportSnapshot(
        id=row.id,
        grant_id=row.grant_id,
        organization_id=row.organization_id,
        requested_by=row.requested_by,
        description=row.description,
        status=row.status,
        risk=row.risk,
        level=row.level,
        requested_at=row.requested_at,
        submitted_at=row.submitted_at,
        decided_at=row.decided_at,
        manifest_sha256=row.manifest_sha256,
        files=tuple(FileSnapshot(f.n, f.name, f.bytes, f.sha256, f.received) for f in files),
        reviews=tuple(
            ReviewSnapshot(r.stage, r.actor, r.approve, r.risk, r.reasons, r.at) for r in reviews
        ),
        report=json.loads(row.report) if row.report else None,
    )


def report_summary(report: CheckReport) -> dict[str, Any]:
    """What the ledger keeps of a report: enough to see why, never a value."""
    fired: dict[str, int] = {}
    for finding in report.findings:
        fired[str(finding.check)] = fired.get(str(finding.check), 0) + 1
    return {
        "level": report.level,
        "passed": report.passed,
        "blocking": len(report.blocking),
        "for_review": len(report.for_review),
        "fired": fired,
        "files": [{"file": f.file, "kind": str(f.kind), "sha256": f.sha256} for f in report.files],
        "policy_digest": report.policy_digest,
    }
