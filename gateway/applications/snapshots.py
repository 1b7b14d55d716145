"""What the applications service returns: plain, frozen snapshots of its rows, and the
reviewer's risk assessment."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.applications.form import ApplicationForm, FieldPlan
from gateway.db.models import (
    Application,
    ApplicationAttachment,
    ApplicationEvent,
    ApplicationStatus,
)


class RiskLevel(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RiskAssessment(BaseModel):
    """The substantive reviewer's assessment of what could go wrong (R18), with the
    opinion: its level, and what it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: RiskLevel
    reidentification: str = Field(
        min_length=1, max_length=2000, description="could people be singled out, and how"
    )
    misuse: str = Field(
        min_length=1, max_length=2000, description="could the data serve another purpose"
    )
    measures: str = Field(
        min_length=1, max_length=2000, description="what keeps the risks down (views, terms)"
    )


@dataclass(frozen=True)
class EventSnapshot:
    round: int
    step: str
    actor: str
    at: datetime
    status: ApplicationStatus
    dataset_id: str | None
    recommends: bool | None
    text: str | None
    reasons: tuple[str, ...]
    risk: RiskAssessment | None
    due_on: date | None
    on_time: bool | None

    @classmethod
    def of(cls, row: ApplicationEvent) -> EventSnapshot:
        return cls(
            round=row.round,
            step=row.step,
            actor=row.actor,
            at=row.at,
            status=row.status,
            dataset_id=row.dataset_id,
            recommends=row.recommends,
            text=row.text,
            reasons=tuple(json.loads(row.reasons)) if row.reasons else (),
            risk=RiskAssessment.model_validate_json(row.risk) if row.risk else None,
            due_on=row.due_on,
            on_time=row.on_time,
        )


@dataclass(frozen=True)
class AttachmentSnapshot:
    id: str
    kind: str
    name: str
    media_type: str
    size: int
    sha256: str
    uploaded_by: str
    uploaded_at: datetime

    @classmethod
    def of(cls, row: ApplicationAttachment) -> AttachmentSnapshot:
        return cls(
            row.id,
            row.kind,
            row.name,
            row.media_type,
            row.size,
            row.sha256,
            row.uploaded_by,
            row.uploaded_at,
        )


@dataclass(frozen=True)
class ApplicationSnapshot:
    id: str
    organization_id: str
    created_by: str
    title: str
    form: ApplicationForm
    status: ApplicationStatus
    round: int
    stage_since: datetime | None
    due_on: date | None
    provisional: bool
    overdue: bool
    opinion_by: str | None
    submitted_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: Application, today: date) -> ApplicationSnapshot:
        return cls(
            id=row.id,
            organization_id=row.organization_id,
            created_by=row.created_by,
            title=row.title,
            form=ApplicationForm.model_validate_json(row.form),
            status=row.status,
            round=row.round,
            stage_since=row.stage_since,
            due_on=row.due_on,
            provisional=row.provisional,
            overdue=row.due_on is not None and today > row.due_on,
            opinion_by=row.opinion_by,
            submitted_at=row.submitted_at,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class DatasetPlan:
    """What the applicant will get of one requested dataset: ``fields`` planned field by
    field; ``problems`` what stands in the way of submitting (unknown fields, a dataset
    that is not shared, missing conditions)."""

    dataset_id: str
    name: str
    provider_id: str
    level: str
    conditional: bool
    usage_conditions: str
    fields: tuple[FieldPlan, ...]
    problems: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "name": self.name,
            "provider_id": self.provider_id,
            "level": self.level,
            "conditional": self.conditional,
            "usage_conditions": self.usage_conditions,
            "fields": [plan.to_dict() for plan in self.fields],
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class ApplicationDetail:
    application: ApplicationSnapshot
    plans: tuple[DatasetPlan, ...]
    events: tuple[EventSnapshot, ...]
    attachments: tuple[AttachmentSnapshot, ...]
    pending_consents: tuple[str, ...]  # conditional datasets still without their consent
