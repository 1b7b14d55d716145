"""The providers' data contribution (R15; Qingdao §25): for a period of China-time days,
per provider organization and per dataset, what their data was like (quality), how much
it was used (use) and what came of it (value), each scored 0 to 100 from counts shown
beside the scores.

The counts, by the database (aggregates grouped by dataset or by provider, as
:mod:`gateway.reports.operations` counts; an event counts in the period its time falls in):

- quality: uploads and those without a warning of the quality check (R6); objections
  raised, answered on time, answered late, overdue at the period's end (the operation
  report's rules); the applicants' ratings of the dataset in their feedback (1 to 5);
- use: applications submitted naming the dataset; grants made, sandbox sessions started,
  cells executed and exports requested on grants from agreements naming it;
- value: exports released on those grants; feedback given on them (each reports the
  effect of the data's use); the applicants' notes on the dataset.

A grant is tied to datasets by the agreement it was made from (the datasets its
application named); a grant made by hand, for an agreement signed elsewhere, is tied to
none. A provider's counts are those of its datasets, each application, grant, session,
cell, export and piece of feedback counted once however many of its datasets it names.

The scores (integers, halves rounded up; a part without inputs is left out, a score
without parts is none):

- quality = the mean of: clean uploads / uploads; objections answered on time /
  (answered + overdue); (average rating - 1) / 4; each as a percentage;
- use = the mean, over its five counts, of count / the highest count of that kind among
  the providers (or among the datasets) in the period, as a percentage;
- value = the same over its three counts;
- contribution = the mean of quality, use and value.

Use and value are relative: 100 is the most any provider (dataset) reached in the
period; the highest counts are part of the report, so each score can be checked by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from sqlalchemy import Integer, case, cast, distinct, func, select, true
from sqlalchemy.orm import Session

from audit import canonical
from gateway.applications.workflow import Step
from gateway.db.models import (
    Agreement,
    ApplicationDataset,
    ApplicationEvent,
    Dataset,
    DatasetVersion,
    Export,
    ExportStatus,
    Feedback,
    Grant,
    Objection,
    Organization,
    SandboxExecution,
    SandboxSession,
)
from gateway.reports.operations import (
    Period,
    _in,
    _json_elements,
    _json_text,
    _when,
    objection_counts,
)

Level = Literal["providers", "datasets"]
LEVELS: tuple[Level, ...] = ("providers", "datasets")
USE = ("applications", "grants", "sessions", "cells", "exports")
VALUE = ("released", "feedback", "notes")
QUALITY_PARTS = ("uploads", "objections", "ratings")
SCORES = ("quality", "use", "value", "contribution")


@dataclass(frozen=True)
class Counts:
    """What a provider's or a dataset's score is computed from."""

    uploads: int = 0
    clean_uploads: int = 0  # without a warning of the quality check
    objections_raised: int = 0
    objections_on_time: int = 0
    objections_late: int = 0
    objections_overdue: int = 0
    ratings: int = 0  # the applicants' ratings of the dataset, 1 to 5
    rating_total: int = 0
    applications: int = 0
    grants: int = 0
    sessions: int = 0
    cells: int = 0
    exports: int = 0
    released: int = 0
    feedback: int = 0
    notes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


NAMES = tuple(item.name for item in fields(Counts))


@dataclass(frozen=True)
class Scores:
    """0 to 100 each (none without inputs): the parts, then the four scores."""

    parts: tuple[tuple[str, int | None], ...]  # "quality.uploads", …, "value.notes"
    quality: int | None
    use: int | None
    value: int | None
    contribution: int | None

    def to_dict(self) -> dict[str, int | None]:
        return {
            **dict(self.parts),
            **{name: getattr(self, name) for name in SCORES},
        }


@dataclass(frozen=True)
class Contribution:
    """One provider (``provider_id == id``) or one dataset, its counts and scores."""

    id: str
    name: str
    provider_id: str
    provider: str
    counts: Counts
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "provider_id": self.provider_id,
            "provider": self.provider,
            "counts": self.counts.to_dict(),
            "scores": self.scores.to_dict(),
        }


@dataclass(frozen=True)
class ContributionReport:
    period: Period
    providers: tuple[Contribution, ...]  # the highest contribution first
    datasets: tuple[Contribution, ...]
    highest: dict[Level, Counts]  # the highest use and value counts, per level

    def level(self, level: Level) -> tuple[Contribution, ...]:
        return self.providers if level == "providers" else self.datasets

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period.to_dict(),
            **{level: [row.to_dict() for row in self.level(level)] for level in LEVELS},
            "highest": {
                level: {name: getattr(self.highest[level], name) for name in USE + VALUE}
                for level in LEVELS
            },
        }

    def sha256(self) -> str:
        """SHA-256 of :meth:`to_dict` as canonical JSON."""
        return hashlib.sha256(canonical.encode(self.to_dict())).hexdigest()


# ------------------------------------------------------------------ scoring (pure)
def percent(part: int, whole: int) -> int | None:
    """``part`` of ``whole`` as a whole percentage, halves up; none of nothing."""
    if whole <= 0:
        return None
    return (200 * part + whole) // (2 * whole)


def mean(values: Iterable[int | None]) -> int | None:
    """The mean of the values given (none left out), halves up; none of none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return (2 * sum(present) + len(present)) // (2 * len(present))


def score(counts: Counts, highest: Counts) -> Scores:
    """The scores of ``counts`` against the ``highest`` use and value counts."""
    answered = counts.objections_on_time + counts.objections_late + counts.objections_overdue
    quality = {
        "quality.uploads": percent(counts.clean_uploads, counts.uploads),
        "quality.objections": percent(counts.objections_on_time, answered),
        "quality.ratings": percent(counts.rating_total - counts.ratings, 4 * counts.ratings),
    }
    use = {f"use.{name}": percent(getattr(counts, name), getattr(highest, name)) for name in USE}
    value = {
        f"value.{name}": percent(getattr(counts, name), getattr(highest, name)) for name in VALUE
    }
    overall = [mean(quality.values()), mean(use.values()), mean(value.values())]
    return Scores(
        parts=tuple({**quality, **use, **value}.items()),
        quality=overall[0],
        use=overall[1],
        value=overall[2],
        contribution=mean(overall),
    )


def highest_counts(rows: Sequence[Counts]) -> Counts:
    """The highest of each count among ``rows`` (all zero without rows)."""
    return Counts(**{name: max((getattr(row, name) for row in rows), default=0) for name in NAMES})


# ------------------------------------------------------------------ counting
def _grant_datasets() -> Any:
    """(grant, dataset) pairs: the datasets named by the application of the agreement
    each grant was made from."""
    return (
        select(Grant.id.label("grant_id"), ApplicationDataset.dataset_id.label("dataset_id"))
        .join(Agreement, Agreement.id == Grant.agreement_id)
        .join(ApplicationDataset, ApplicationDataset.application_id == Agreement.application_id)
        .distinct()
        .subquery()
    )


def _counted(session: Session, key: Any, period: Period) -> dict[str, dict[str, int]]:
    """Every count, by ``key`` (the dataset's id or its provider's)."""
    dialect = session.get_bind().dialect.name
    found: dict[str, dict[str, int]] = {}

    def add(names: Sequence[str], statement: Any) -> None:
        for row in session.execute(statement.group_by(key)):
            counts = found.setdefault(str(row[0]), {})
            for name, value in zip(names, row[1:], strict=True):
                counts[name] = int(value or 0)

    add(
        ("uploads", "clean_uploads"),
        select(key, func.count(), _when(DatasetVersion.warnings == 0))
        .select_from(DatasetVersion)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(_in(DatasetVersion.uploaded_at, period)),
    )
    add(
        ("objections_raised", "objections_on_time", "objections_late", "objections_overdue"),
        select(key, *objection_counts(dialect, period))
        .select_from(Objection)
        .join(Dataset, Dataset.id == Objection.dataset_id),
    )
    element = _json_elements(dialect, Feedback.datasets)
    rating = cast(_json_text(dialect, element.c.value, "quality"), Integer)
    noted = func.coalesce(_json_text(dialect, element.c.value, "note"), "") != ""
    add(
        ("ratings", "rating_total", "notes"),
        select(key, func.count(rating), func.coalesce(func.sum(rating), 0), _when(noted))
        .select_from(Feedback)
        .join(element, true())
        .join(Dataset, Dataset.id == _json_text(dialect, element.c.value, "dataset_id"))
        .where(_in(Feedback.submitted_at, period)),
    )
    submitted = ApplicationEvent
    add(
        ("applications",),
        select(key, func.count(distinct(submitted.application_id)))
        .select_from(ApplicationDataset)
        .join(Dataset, Dataset.id == ApplicationDataset.dataset_id)
        .join(submitted, submitted.application_id == ApplicationDataset.application_id)
        .where(submitted.step == str(Step.SUBMIT), _in(submitted.at, period)),
    )
    links = _grant_datasets()

    def on_grants(table: Any, column: Any) -> Any:
        return (
            select(key)
            .select_from(Dataset)
            .join(links, links.c.dataset_id == Dataset.id)
            .join(table, column == links.c.grant_id)
        )

    add(
        ("grants",),
        on_grants(Grant, Grant.id)
        .add_columns(func.count(distinct(Grant.id)))
        .where(_in(Grant.created_at, period)),
    )
    add(
        ("sessions",),
        on_grants(SandboxSession, SandboxSession.grant_id)
        .add_columns(func.count(distinct(SandboxSession.id)))
        .where(_in(SandboxSession.started_at, period)),
    )
    add(
        ("cells",),
        on_grants(SandboxExecution, SandboxExecution.grant_id)
        .add_columns(func.count(distinct(SandboxExecution.id)))
        .where(SandboxExecution.kind == "execute", _in(SandboxExecution.recorded_at, period)),
    )
    requested = _in(Export.requested_at, period)
    released = (Export.status == ExportStatus.RELEASED) & _in(Export.decided_at, period)
    add(
        ("exports", "released"),
        on_grants(Export, Export.grant_id)
        .add_columns(
            func.count(distinct(_only(requested, Export.id))),
            func.count(distinct(_only(released, Export.id))),
        )
        .where(requested | released),
    )
    add(
        ("feedback",),
        on_grants(Feedback, Feedback.grant_id)
        .add_columns(func.count(distinct(Feedback.id)))
        .where(_in(Feedback.submitted_at, period)),
    )
    return found


def _only(condition: Any, column: Any) -> Any:
    """``column`` where ``condition`` holds, else NULL (which COUNT leaves out)."""
    return case((condition, column), else_=None)


def _ranked(rows: Iterable[Contribution]) -> tuple[Contribution, ...]:
    """The highest contribution first (none last), then by name."""
    return tuple(
        sorted(
            rows,
            key=lambda row: (
                -(row.scores.contribution if row.scores.contribution is not None else -1),
                row.name,
                row.id,
            ),
        )
    )


def compute_contributions(session: Session, period: Period) -> ContributionReport:
    """Every provider's and dataset's contribution in ``period``: the datasets ever
    published that existed by the period's end, and their providers."""
    subjects = session.execute(
        select(Dataset.id, Dataset.name, Organization.id, Organization.name)
        .join(Organization, Organization.id == Dataset.provider_id)
        .where(Dataset.published_revision.is_not(None), Dataset.created_at < period.end)
        .order_by(Dataset.id)
    ).all()
    providers = {provider_id: name for _, _, provider_id, name in subjects}
    by_dataset = _counted(session, Dataset.id, period)
    by_provider = _counted(session, Dataset.provider_id, period)

    def level_rows(
        items: Iterable[tuple[str, str, str, str]], counted: dict[str, dict[str, int]]
    ) -> tuple[tuple[Contribution, ...], Counts]:
        unscored = [
            Contribution(
                id=key,
                name=name,
                provider_id=provider_id,
                provider=provider,
                counts=Counts(**counted.get(key, {})),
                scores=Scores((), None, None, None, None),
            )
            for key, name, provider_id, provider in items
        ]
        highest = highest_counts([row.counts for row in unscored])
        scored = (replace(row, scores=score(row.counts, highest)) for row in unscored)
        return _ranked(scored), highest

    datasets, highest_dataset = level_rows(
        ((d, name, p, providers[p]) for d, name, p, _ in subjects), by_dataset
    )
    organizations, highest_provider = level_rows(
        ((p, name, p, name) for p, name in sorted(providers.items())), by_provider
    )
    return ContributionReport(
        period=period,
        providers=organizations,
        datasets=datasets,
        highest={"providers": highest_provider, "datasets": highest_dataset},
    )


# ------------------------------------------------------------------ labels
COLUMN_LABELS: dict[str, tuple[str, str]] = {
    "level": ("层级", "Level"),
    "id": ("编号", "Id"),
    "name": ("名称", "Name"),
    "provider": ("提供单位", "Provider"),
    "uploads": ("上传次数", "Uploads"),
    "clean_uploads": ("质量检查无警告", "Uploads without a warning"),
    "objections_raised": ("异议提出", "Objections raised"),
    "objections_on_time": ("异议按期答复", "Objections answered on time"),
    "objections_late": ("异议逾期答复", "Objections answered late"),
    "objections_overdue": ("异议期末逾期未答复", "Objections overdue at the end"),
    "ratings": ("质量评分条数", "Quality ratings"),
    "rating_total": ("质量评分合计", "Sum of the ratings"),
    "applications": ("申请", "Applications"),
    "grants": ("授权", "Grants"),
    "sessions": ("沙箱会话", "Sandbox sessions"),
    "cells": ("执行单元格", "Cells executed"),
    "exports": ("导出申请", "Exports requested"),
    "released": ("导出放行", "Exports released"),
    "feedback": ("使用效果反馈", "Feedback on the effect"),
    "notes": ("数据集意见", "Notes on the dataset"),
    "quality.uploads": ("质量·上传", "Quality: uploads"),
    "quality.objections": ("质量·异议", "Quality: objections"),
    "quality.ratings": ("质量·评分", "Quality: ratings"),
    "use.applications": ("使用·申请", "Use: applications"),
    "use.grants": ("使用·授权", "Use: grants"),
    "use.sessions": ("使用·会话", "Use: sessions"),
    "use.cells": ("使用·单元格", "Use: cells"),
    "use.exports": ("使用·导出", "Use: exports"),
    "value.released": ("价值·放行", "Value: released"),
    "value.feedback": ("价值·效果反馈", "Value: feedback"),
    "value.notes": ("价值·意见", "Value: notes"),
    "quality": ("数据质量", "Quality"),
    "use": ("应用情况", "Use"),
    "value": ("价值实现", "Value"),
    "contribution": ("贡献评分", "Contribution"),
}
LEVEL_LABELS: dict[str, tuple[str, str]] = {
    "providers": ("提供单位", "Providers"),
    "datasets": ("数据集", "Datasets"),
}
PART_NAMES = (
    *(f"quality.{name}" for name in QUALITY_PARTS),
    *(f"use.{name}" for name in USE),
    *(f"value.{name}" for name in VALUE),
)
COLUMNS = ("level", "id", "name", "provider", *NAMES, *PART_NAMES, *SCORES)


def rows(report: ContributionReport) -> list[list[str | int | None]]:
    """The report as a table of :data:`COLUMNS`, providers first, then datasets."""
    table: list[list[str | int | None]] = []
    for level in LEVELS:
        for row in report.level(level):
            scores = row.scores.to_dict()
            table.append(
                [
                    level,
                    row.id,
                    row.name,
                    row.provider,
                    *(getattr(row.counts, name) for name in NAMES),
                    *(scores[name] for name in (*PART_NAMES, *SCORES)),
                ]
            )
    return table
