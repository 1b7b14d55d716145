"""What an applicant asks for (R9): the application form, and what each field will be.

The form names the datasets and, of each, the fields the applicant needs, each with its
justification (the minimal-necessary principle: no field without a reason); the purpose,
scenario, period and the applicant's security measures. For a dataset offered on
conditions (share ``conditional``), the applicant says how they meet its usage
conditions, and its provider must consent.

:func:`plan_field` tells the applicant, before they submit, what each field will be in
their sandbox: on which conditions, in which kind of view and with which treatments, by
the field's sensitivity class and the dataset's security level
(``policies/treatments.yaml``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.catalog.entry import FIELD_NAME, CatalogEntry, Share
from sandbox.views.treatments import AGGREGATE_LEVEL_TREATMENTS, Treatment, TreatmentPolicy

MAX_DATASETS = 20
MAX_PERIOD_DAYS = 3 * 366  # an agreement runs for three years at most
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Justification = Annotated[str, Field(min_length=2, max_length=500)]


class RequestedField(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=FIELD_NAME.pattern)
    justification: Justification = Field(description="why the purpose needs this field")


class RequestedDataset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_id: str = Field(min_length=1, max_length=64)
    fields: list[RequestedField] = Field(min_length=1, max_length=500)
    conditions: str = Field(
        default="",
        max_length=4000,
        description="how the applicant meets the dataset's usage conditions (conditional data)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        names = [item.name for item in self.fields]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"fields asked for twice: {', '.join(twice)}")
        return self


class ApplicationForm(BaseModel):
    """The application's content: saved as a draft, checked on submit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=200)
    purpose: Text
    scenario: Text
    starts_on: date
    ends_on: date
    security_measures: Text
    datasets: list[RequestedDataset] = Field(min_length=1, max_length=MAX_DATASETS)

    @model_validator(mode="after")
    def _checked(self) -> Self:
        if self.ends_on <= self.starts_on:
            raise ValueError("the period ends after it starts")
        if self.ends_on - self.starts_on > timedelta(days=MAX_PERIOD_DAYS):
            raise ValueError("the period is three years at most")
        ids = [item.dataset_id for item in self.datasets]
        twice = sorted({dataset for dataset in ids if ids.count(dataset) > 1})
        if twice:
            raise ValueError(f"datasets asked for twice: {', '.join(twice)}")
        return self


class ViewKind(enum.StrEnum):
    RECORD = "record"  # a record-level view, with the treatments listed
    AGGREGATE = "aggregate"  # aggregated views only
    NONE = "none"  # the field cannot be granted at this level


@dataclass(frozen=True)
class FieldPlan:
    """What a requested field will be: ``conditional`` when its dataset needs the
    provider's consent; ``view`` and ``treatments`` the views it may appear in."""

    name: str
    sensitivity: str
    conditional: bool
    view: ViewKind
    treatments: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sensitivity": self.sensitivity,
            "conditional": self.conditional,
            "view": str(self.view),
            "treatments": list(self.treatments),
        }


def plan_field(entry: CatalogEntry, name: str, policy: TreatmentPolicy) -> FieldPlan | None:
    """The plan of field ``name`` of ``entry``; ``None`` if the dataset has no such field."""
    found = entry.field(name)
    if found is None:
        return None
    allowed = policy.allowed.get((found.sensitivity, entry.level), frozenset())
    usable = sorted(str(t) for t in allowed if t is not Treatment.DROP)
    level = policy.levels.get(entry.level)
    if not usable:
        view = ViewKind.NONE
    elif level is None or not level.record_level or allowed <= AGGREGATE_LEVEL_TREATMENTS:
        view = ViewKind.AGGREGATE
    else:
        view = ViewKind.RECORD
    return FieldPlan(
        name=found.name,
        sensitivity=str(found.sensitivity),
        conditional=entry.share is Share.CONDITIONAL,
        view=view,
        treatments=tuple(usable),
    )
