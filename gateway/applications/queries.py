"""The applications service's reads of the database that are not one row: what an
application asks for and may get, whose consent it waits for, whether its organization
qualifies, and who may see it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.applications.form import ApplicationForm, ViewKind, plan_field
from gateway.applications.snapshots import DatasetPlan
from gateway.applications.workflow import Step
from gateway.authz import Actor
from gateway.catalog.entry import Share
from gateway.catalog.service import entry_in_force
from gateway.db.models import (
    Application,
    ApplicationDataset,
    ApplicationEvent,
    ApplicationStatus,
    Dataset,
    DatasetStatus,
    Organization,
    OrganizationStatus,
    VerificationStatus,
)
from gateway.identity.model import _own_organization, _plausible
from sandbox.views.treatments import TreatmentPolicy

OPERATOR_READERS = frozenset({"reviewer", "approver", "regulator"})


def visible(session: Session, actor: Actor, row: Application) -> bool:
    """Its organization sees an application; once submitted, the operator's readers and
    the stewards of the providers it asks data of see it too."""
    if row.organization_id == _own_organization(actor):
        return True
    if row.status is ApplicationStatus.DRAFT:
        return False
    if OPERATOR_READERS & actor.roles:
        return True
    return "provider_steward" in actor.roles and (
        session.scalar(
            select(ApplicationDataset.dataset_id).where(
                ApplicationDataset.application_id == row.id,
                ApplicationDataset.provider_id == _own_organization(actor),
            )
        )
        is not None
    )


def plans_of(
    session: Session, form: ApplicationForm, treatments: TreatmentPolicy
) -> list[DatasetPlan]:
    """What each requested field would be, and what stands in the way of submitting."""
    plans = []
    for requested in form.datasets:
        dataset = (
            session.get(Dataset, requested.dataset_id) if _plausible(requested.dataset_id) else None
        )
        if dataset is None or dataset.status is not DatasetStatus.PUBLISHED:
            plans.append(
                DatasetPlan(
                    requested.dataset_id,
                    "",
                    "",
                    "",
                    False,
                    "",
                    (),
                    (f"there is no published dataset {requested.dataset_id!r}",),
                )
            )
            continue
        entry = entry_in_force(session, dataset)
        problems = []
        if entry.share is Share.NOT_SHARED:
            problems.append(f"{entry.name} is not shared")
        fields = []
        for item in requested.fields:
            planned = plan_field(entry, item.name, treatments)
            if planned is None:
                problems.append(f"{entry.name} has no field {item.name!r}")
                continue
            if planned.view is ViewKind.NONE:
                problems.append(
                    f"{entry.name}: {item.name} ({planned.sensitivity}) cannot be granted "
                    f"at level {entry.level}"
                )
            fields.append(planned)
        conditional = entry.share is Share.CONDITIONAL
        if conditional and not requested.conditions.strip():
            problems.append(f"{entry.name} is offered on conditions: say how you meet them")
        plans.append(
            DatasetPlan(
                dataset_id=dataset.id,
                name=entry.name,
                provider_id=dataset.provider_id,
                level=entry.level,
                conditional=conditional,
                usage_conditions=entry.usage_conditions,
                fields=tuple(fields),
                problems=tuple(problems),
            )
        )
    return plans


def pending_consents(session: Session, row: Application) -> dict[str, str]:
    """Conditional datasets of ``row`` without their provider's consent this round,
    with their providers."""
    needed = {
        link.dataset_id: link.provider_id
        for link in session.scalars(
            select(ApplicationDataset).where(
                ApplicationDataset.application_id == row.id, ApplicationDataset.conditional
            )
        )
    }
    given = session.scalars(
        select(ApplicationEvent.dataset_id).where(
            ApplicationEvent.application_id == row.id,
            ApplicationEvent.round == row.round,
            ApplicationEvent.step == str(Step.CONSENT),
        )
    )
    for dataset_id in given:
        needed.pop(dataset_id or "", None)
    return needed


def link_datasets(session: Session, row: Application, form: ApplicationForm) -> None:
    """Rewrite the datasets ``row`` asks for, with their providers."""
    for old in session.scalars(
        select(ApplicationDataset).where(ApplicationDataset.application_id == row.id)
    ):
        session.delete(old)
    session.flush()
    for requested in form.datasets:
        dataset = (
            session.get(Dataset, requested.dataset_id) if _plausible(requested.dataset_id) else None
        )
        if dataset is None or dataset.status is not DatasetStatus.PUBLISHED:
            continue  # listed as a problem by the plan; submit refuses it
        entry = entry_in_force(session, dataset)
        session.add(
            ApplicationDataset(
                application_id=row.id,
                dataset_id=dataset.id,
                provider_id=dataset.provider_id,
                conditional=entry.share is Share.CONDITIONAL,
            )
        )


def qualification_problems(session: Session, row: Application) -> list[str]:
    """R10: the organization is real-name verified, not flagged, and active."""
    organization = session.get(Organization, row.organization_id)
    if organization is None:
        return ["the organization is gone"]
    problems = []
    if organization.verification is not VerificationStatus.VERIFIED:
        problems.append("the organization's real-name verification is not complete")
    if organization.flagged:
        problems.append("the organization is on a dishonesty or serious-violation list")
    if organization.status is not OrganizationStatus.ACTIVE:
        problems.append("the organization is suspended")
    return problems
