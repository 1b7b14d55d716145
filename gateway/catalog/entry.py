"""A catalog entry (R4): what a dataset is, what its fields hold, and on what terms it is
shared and opened, with the legal basis of every restriction.

An entry is data: it is validated here, stored as JSON with each revision (every change
is a new revision, with who and why), and shown as it was. Openness is ordered
(unconditional, conditional, not shared / not open); a revision that makes an attribute
less open must give its legal basis, and is marked for approval as such (R5).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.identifiers import Kind
from sandbox.views.treatments import SensitivityClass

FIELD_NAME = re.compile(r"^[^\s\"'`\\]{1,63}$")  # any script; no quotes, spaces or backslashes
MAX_FIELDS = 500


class Share(StrEnum):
    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NOT_SHARED = "not_shared"


class Openness(StrEnum):
    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NOT_OPEN = "not_open"


class UpdateCycle(StrEnum):
    REALTIME = "realtime"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"
    IRREGULAR = "irregular"


# how many days may pass between versions before a new one is late (None: never late)
CYCLE_DAYS: dict[UpdateCycle, int | None] = {
    UpdateCycle.REALTIME: 1,
    UpdateCycle.DAILY: 1,
    UpdateCycle.WEEKLY: 7,
    UpdateCycle.MONTHLY: 31,
    UpdateCycle.QUARTERLY: 92,
    UpdateCycle.YEARLY: 366,
    UpdateCycle.IRREGULAR: None,
}


class DataFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    EXCEL = "excel"


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"


Text = Annotated[str, Field(min_length=1, max_length=4000)]


class CatalogField(BaseModel):
    """One data item of the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=FIELD_NAME.pattern)
    type: FieldType
    description: str = Field(min_length=1, max_length=500)
    sensitivity: SensitivityClass
    identifier: Kind | None = Field(
        default=None,
        description="the kind of identifier the field holds (its values are checked)",
    )

    @model_validator(mode="after")
    def _identifier_is_direct(self) -> Self:
        if self.identifier is not None and self.sensitivity != SensitivityClass.DIRECT_IDENTIFIER:
            raise ValueError(f"{self.name}: a field holding identifiers is a direct identifier")
        return self


class CatalogEntry(BaseModel):
    """What the provider declares about a dataset (R4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: Text
    fields: list[CatalogField] = Field(min_length=1, max_length=MAX_FIELDS)
    update_cycle: UpdateCycle
    format: DataFormat
    share: Share
    open: Openness
    level: str = Field(min_length=1, max_length=16, description="security level (grading)")
    usage_conditions: str = Field(default="", max_length=4000)
    legal_basis: dict[str, Text] = Field(
        default_factory=dict,
        description="the legal basis of each restriction, by attribute: share, open",
    )

    @model_validator(mode="after")
    def _checked(self) -> Self:
        names = [field.name for field in self.fields]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"fields named twice: {', '.join(twice)}")
        unknown = sorted(set(self.legal_basis) - {"share", "open"})
        if unknown:
            raise ValueError(f"legal_basis is given by attribute (share, open), not {unknown}")
        for attribute in restricted(self):
            if attribute not in self.legal_basis:
                raise ValueError(f"the restriction of {attribute} needs its legal basis")
        conditional = Share.CONDITIONAL in (self.share,) or self.open is Openness.CONDITIONAL
        if conditional and not self.usage_conditions.strip():
            raise ValueError("data offered on conditions states its usage conditions")
        return self

    def field(self, name: str) -> CatalogField | None:
        return next((field for field in self.fields if field.name == name), None)


_RANK = {
    Share.UNCONDITIONAL: 0,
    Share.CONDITIONAL: 1,
    Share.NOT_SHARED: 2,
    Openness.UNCONDITIONAL: 0,
    Openness.CONDITIONAL: 1,
    Openness.NOT_OPEN: 2,
}


def restricted(entry: CatalogEntry) -> list[str]:
    """The attributes of ``entry`` that are not unconditional."""
    return [name for name in ("share", "open") if _RANK[getattr(entry, name)] > 0]


def less_open(before: CatalogEntry, after: CatalogEntry) -> list[str]:
    """The attributes ``after`` makes less open than ``before`` (R5: needs approval)."""
    return [
        name
        for name in ("share", "open")
        if _RANK[getattr(after, name)] > _RANK[getattr(before, name)]
    ]
