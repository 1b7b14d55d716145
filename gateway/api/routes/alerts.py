"""Abnormal-operation alerts (R21). Thin over :class:`~gateway.trail.alert_service.AlertService`.

- ``GET /alerts``: alerts newest first, filtered by rule, state and time (``since`` and
  ``until`` as for the trail: a China-time day ``YYYY-MM-DD``, ``until`` including it,
  or an ISO 8601 time), a page at a time (``next_before`` is the cursor).
- ``GET /alerts/{id}``: one alert with the ledger entries behind it.
- ``POST /alerts/{id}/acknowledge``: an approver or a regulator acknowledges an open alert
  with a note; the acknowledgement is a ledger entry, and the alert's state is derived
  from it.

An alert carries its facts and, for people, what happened in zh-CN and en (``message``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS, Identifier
from gateway.api.routes.trail import When, parse_time
from gateway.identity.model import Account
from gateway.trail.alert_policy import Rule, Severity
from gateway.trail.alert_service import MAX_LIMIT, MAX_NOTE, Alert, AlertQuery, AlertService
from gateway.trail.alerts import AlertState
from gateway.trail.search import MAX_TIME
from gateway.trail.times import china_iso
from gateway.web.i18n import LOCALES, translations

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=PROBLEMS)
Reader = Annotated[Account, Depends(Requires("alert", "read"))]
Acknowledger = Annotated[Account, Depends(Requires("alert", "acknowledge"))]


def alerts_of(found: ServicesDep) -> AlertService:
    if found.trail is None:  # a gateway opened without its trail index (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no trail index")
    return AlertService(found.trail, found.writes, found.authorizer)


Alerts = Annotated[AlertService, Depends(alerts_of)]


# ------------------------------------------------------------------ schemas
class AcknowledgementPublic(BaseModel):
    seq: int = Field(description="the ledger entry that acknowledged the alert")
    by: str = Field(description="who, as user:<id>")
    by_name: str | None = Field(description="their username")
    time: int = Field(description="when, µs since 1970 (UTC)")
    at: str = Field(description="the same time in China time, ISO 8601")
    note: str


class AlertPublic(BaseModel):
    id: str
    rule: Rule
    severity: Severity
    state: AlertState
    subject: str = Field(description="what the alert is about, kind:id")
    person: str | None = Field(description="the person concerned, user:<id>")
    person_name: str | None
    organization: str | None = Field(description="the organization concerned, its id")
    first_seq: int = Field(description="the first ledger entry behind the alert")
    last_seq: int = Field(description="the last ledger entry behind the alert so far")
    count: int = Field(description="how many entries are behind it")
    first_time: int = Field(description="µs since 1970 (UTC)")
    last_time: int = Field(description="µs since 1970 (UTC)")
    first_at: str = Field(description="first_time in China time, ISO 8601")
    last_at: str = Field(description="last_time in China time, ISO 8601")
    facts: dict[str, Any] = Field(description="what the rule measured")
    message: dict[str, str] = Field(description="what happened, by language (zh-CN, en)")
    acknowledgement: AcknowledgementPublic | None
    url: str = Field(description="the alert's page in the console")


class AlertDetailPublic(AlertPublic):
    seqs: list[int] = Field(description="the ledger entries behind the alert (the first 500)")


class AlertPagePublic(BaseModel):
    alerts: list[AlertPublic] = Field(description="newest first")
    next_before: int | None = Field(description="`before` for the next page; null at the end")


class AcknowledgementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(
        min_length=1, max_length=MAX_NOTE, description="what was found or done; in the ledger"
    )


def messages(alert: Alert) -> dict[str, str]:
    """What happened, in each of the console's languages, in the console's words (imported
    here, not above: the console's pages import the API's dependencies)."""
    from gateway.web.pages.alerts import describe

    return {code: describe(alert, translations(code).gettext) for code in LOCALES}


def alert_public(alert: Alert) -> dict[str, Any]:
    acknowledged = alert.acknowledgement
    return {
        **{name: getattr(alert, name) for name in AlertPublic.model_fields if hasattr(alert, name)},
        "first_at": china_iso(alert.first_time),
        "last_at": china_iso(alert.last_time),
        "message": messages(alert),
        "acknowledgement": None
        if acknowledged is None
        else AcknowledgementPublic(
            seq=acknowledged.seq,
            by=acknowledged.by,
            by_name=acknowledged.by_name,
            time=acknowledged.at,
            at=china_iso(acknowledged.at),
            note=acknowledged.note,
        ),
        "url": f"/alerts/{alert.id}",
    }


# ------------------------------------------------------------------ routes
@router.get("")
def list_alerts(
    account: Reader,
    alerts: Alerts,
    rule: Rule | None = None,
    state: AlertState | None = None,
    since: When = None,
    until: When = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_TIME, description="cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> AlertPagePublic:
    """Alerts matching every filter given, newest first: ``since`` keeps those still
    going on at or after it, ``until`` those that began before it."""
    query = AlertQuery(
        rule=rule,
        state=state,
        since=parse_time("since", since, end=False),
        until=parse_time("until", until, end=True),
        before=before,
        limit=limit,
    )
    page = alerts.list_alerts(account.actor(), query)
    return AlertPagePublic(
        alerts=[AlertPublic(**alert_public(alert)) for alert in page.alerts],
        next_before=page.next_before,
    )


@router.get("/{alert_id}")
def get_alert(alert_id: Identifier, account: Reader, alerts: Alerts) -> AlertDetailPublic:
    alert = alerts.get(account.actor(), alert_id)
    return AlertDetailPublic(**alert_public(alert), seqs=alert.seqs)


@router.post("/{alert_id}/acknowledge")
def acknowledge_alert(
    alert_id: Identifier, body: AcknowledgementCreate, account: Acknowledger, alerts: Alerts
) -> AlertPublic:
    """Acknowledge an open alert with a note (409 once acknowledged; nobody acknowledges
    an alert about themselves)."""
    return AlertPublic(**alert_public(alerts.acknowledge(account.actor(), alert_id, body.note)))
