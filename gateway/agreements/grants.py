"""Grants made from signed agreements: the views the agreement's scope allows, built from
the datasets' latest versions, and the sandbox for the agreement's period.

An approver names the views (record-level or aggregated), field by field with the
treatment and its parameters; each field must be one the agreement's scope lists for
that dataset, with a treatment the scope lists for it (the view builder then checks the
treatments policy again, and k-anonymity and the disclosure rules as it builds). The
views are built into ``<data_dir>/views/<grant>`` with their signed manifests and
``view.build`` entries; then the grant is made for the applicant unit's members from the
start of the agreement's period (or now, if that is later) to the end of its last day,
China time, naming the agreement and its SHA-256 in ``grant.create``. If a view cannot be
built nothing is granted and the half-built folder is removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

import duckdb

from gateway.agreements.service import AgreementService
from gateway.authz import Actor, Authorizer
from gateway.catalog.service import CHINA, CatalogService
from gateway.db.models import AgreementStatus
from gateway.identity.model import Conflict, IdentityError
from gateway.sandboxes.service import GrantSnapshot, SandboxService
from sandbox.spawner.ticket import GRANT
from sandbox.views.aggregate import AggregateViewSpec
from sandbox.views.builder import ViewBuilder
from sandbox.views.fields import FieldRule, ViewSpecError
from sandbox.views.record import RecordViewSpec
from sandbox.views.treatments import Treatment

MAX_VIEWS = 20


class GrantRefused(IdentityError):
    """The grant cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class ViewRequest:
    """One view of a grant: ``fields`` are a record view's columns, or an aggregated
    view's dimensions (with ``measures`` summed per cell)."""

    dataset_id: str
    name: str
    kind: Literal["record", "aggregate"]
    fields: tuple[FieldRule, ...]
    measures: tuple[str, ...] = ()
    k: int = 5


def period_of(starts_on: date, ends_on: date, now: datetime) -> tuple[datetime, datetime]:
    """The grant's period for an agreement's days, China time: from the first day's
    start (or ``now``, if later) to the end of the last day."""
    starts = datetime.combine(starts_on, time(), CHINA)
    ends = datetime.combine(ends_on + timedelta(days=1), time(), CHINA)
    return max(starts, now), ends


class AgreementGrants:
    def __init__(
        self,
        agreements: AgreementService,
        sandboxes: SandboxService,
        catalog: CatalogService,
        builder: Callable[[], ViewBuilder],
        views_root: Path,
        authorizer: Authorizer,
    ) -> None:
        self.agreements = agreements
        self.sandboxes = sandboxes
        self.catalog = catalog
        self.builder = builder
        self.views_root = views_root
        self.authorizer = authorizer

    def grant(
        self,
        actor: Actor,
        agreement_id: str,
        *,
        grant_id: str,
        members: Iterable[str],
        views: Sequence[ViewRequest],
    ) -> GrantSnapshot:
        self.authorizer.authorize(actor, "grant", "create")
        if not GRANT.match(grant_id):
            raise GrantRefused("a grant id is 1 to 63 of a-z, 0-9 and -, starting with a-z or 0-9")
        agreement = self.agreements.get(actor, agreement_id)
        if agreement.status is not AgreementStatus.SIGNED:
            raise Conflict("the agreement is not signed by both organizations yet")
        if not views or len(views) > MAX_VIEWS:
            raise GrantRefused(f"a grant has 1 to {MAX_VIEWS} views")
        document = agreement.document
        scope = {item["dataset_id"]: item for item in document["scope"]}
        for view in views:
            check_in_scope(view, scope)
        out = self.views_root / grant_id
        if out.exists():
            raise Conflict(f"there are views of a grant {grant_id} already")
        period = document["period"]
        starts, ends = period_of(
            date.fromisoformat(period["starts_on"]),
            date.fromisoformat(period["ends_on"]),
            self.sandboxes.clock(),
        )
        builder = self.builder()
        try:
            for view in views:
                self._build(builder, actor, grant_id, view, out)
            return self.sandboxes.create_grant(
                actor,
                grant_id=grant_id,
                title=str(document["title"])[:200],
                organization_id=agreement.applicant_id,
                members=members,
                views=grant_id,
                starts_at=starts,
                ends_at=ends,
                agreement=(agreement.id, agreement.sha256),
            )
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise

    def _build(
        self, builder: ViewBuilder, actor: Actor, grant_id: str, view: ViewRequest, out: Path
    ) -> None:
        dataset = self.catalog.dataset(actor, view.dataset_id)
        versions = self.catalog.versions(actor, view.dataset_id)
        if dataset.entry is None or not versions:
            raise GrantRefused(f"{view.dataset_id} has no data uploaded yet")
        entry = dataset.entry
        classes = {item.name: item.sensitivity for item in entry.fields}
        spec: RecordViewSpec | AggregateViewSpec
        if view.kind == "record":
            spec = RecordViewSpec(entry.level, classes, view.fields, k=view.k)
        else:
            spec = AggregateViewSpec(entry.level, classes, view.fields, view.measures)
        try:
            builder.build(
                grant=grant_id,
                version=versions[0].id,
                spec=spec,
                name=view.name,
                out=out,
                actor=actor.user,
            )
        except ViewSpecError as exc:
            raise GrantRefused(f"view {view.name}: {exc}") from None
        except duckdb.Error as exc:  # e.g. a date generalization of a text column
            reason = str(exc).splitlines()[0][:300]
            raise GrantRefused(f"view {view.name}: the data refuses it ({reason})") from None


def check_in_scope(view: ViewRequest, scope: dict[str, dict[str, object]]) -> None:
    """:class:`GrantRefused` unless every field of ``view`` is in the agreement's scope:
    in a record view with a treatment the scope lists for it; in an aggregated view, a
    field the scope lets into views at all (the builder decides how it may be grouped)."""
    found = scope.get(view.dataset_id)
    if found is None:
        raise GrantRefused(f"the agreement does not cover dataset {view.dataset_id!r}")
    fields = {item["name"]: item for item in found["fields"]}  # type: ignore[attr-defined]
    for rule in view.fields:
        agreed = fields.get(rule.column)
        if agreed is None:
            raise GrantRefused(f"view {view.name}: {rule.column} is not in the agreement")
        allowed = set(agreed["treatments"])
        if view.kind == "aggregate" and allowed:
            continue  # it may be grouped by; the builder applies the policy's aggregate rules
        if rule.treatment is not Treatment.DROP and str(rule.treatment) not in allowed:
            raise GrantRefused(
                f"view {view.name}: the agreement allows {rule.column} "
                f"{', '.join(sorted(allowed)) or 'no treatment'}, not {rule.treatment}"
            )
    for measure in view.measures:
        if measure not in fields:
            raise GrantRefused(f"view {view.name}: {measure} is not in the agreement")
