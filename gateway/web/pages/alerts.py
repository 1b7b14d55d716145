"""Abnormal-operation alerts in the console (R21), for those who may read them (approvers,
regulators, administrators): open alerts first, each with what happened in plain words,
who and which organization, when, and the ledger entries behind it; an alert's page
with those entries and, for approvers and regulators, the form that acknowledges it.

Thin over :class:`~gateway.trail.alert_service.AlertService`. Alerts store facts, not
text: :func:`describe` renders them in the reader's language (the API uses it too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Services, ServicesDep
from gateway.authz import Denied
from gateway.identity.model import NotFound
from gateway.trail.alert_policy import Rule, Severity
from gateway.trail.alert_service import MAX_NOTE, Alert, AlertQuery, AlertService
from gateway.trail.alerts import AlertState
from gateway.trail.times import china_day, china_time
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, attempt, not_found, posted
from gateway.web.pages.trail import grant_titles, organization_names
from gateway.web.render import gettext_for, render

router = APIRouter(include_in_schema=False)
ReadAlerts = Annotated[Viewer, Depends(Page("alert", "read"))]
AlertId = Annotated[str, Path(min_length=1, max_length=64)]
OPEN_LISTED = 200
ACKNOWLEDGED_LISTED = 50
ENTRIES_SHOWN = 50

RULE_NAMES = {
    Rule.DENIED_BURST: N_("Refusals in a burst"),
    Rule.ORGANIZATION_DENIED_BURST: N_("An organization's refusals in a burst"),
    Rule.SIGN_IN_FAILURES: N_("Failed sign-ins to an account"),
    Rule.CLIENT_FAILURES: N_("Failed sign-ins from one address"),
    Rule.EXPORT_REFUSALS: N_("Exports refused repeatedly"),
    Rule.DOWNLOAD_BURST: N_("Many downloads of exports"),
    Rule.OFF_HOURS: N_("Sandbox use outside working hours"),
    Rule.SUSPENDED_GRANT_USE: N_("Use of a suspended grant"),
    Rule.BUDGET_LOW: N_("Privacy budget nearly spent"),
}
MESSAGES = {
    Rule.DENIED_BURST: N_(
        "%(count)s requests refused, %(threshold)s or more within %(window)s (%(actions)s)."
    ),
    Rule.ORGANIZATION_DENIED_BURST: N_(
        "%(count)s requests by %(people)s people of the organization refused, "
        "%(threshold)s or more within %(window)s."
    ),
    Rule.SIGN_IN_FAILURES: N_(
        "%(count)s failed sign-ins to the account, %(threshold)s or more within %(window)s."
    ),
    Rule.CLIENT_FAILURES: N_(
        "%(count)s failed sign-ins or refused anonymous requests from this address, "
        "%(threshold)s or more within %(window)s."
    ),
    Rule.EXPORT_REFUSALS: N_(
        "%(count)s exports of the grant refused within %(window)s: %(blocked)s blocked by "
        "the airlock, %(refused)s refused by a reviewer or an approver."
    ),
    Rule.DOWNLOAD_BURST: N_(
        "%(count)s downloads of %(exports)s released exports, %(threshold)s or more "
        "within %(window)s."
    ),
    Rule.OFF_HOURS: N_(
        "The sandbox was used outside the agreed hours (%(hours)s on working days): "
        "%(starts)s sessions started and %(cells)s runs of code, on %(days)s."
    ),
    Rule.SUSPENDED_GRANT_USE: N_(
        "%(count)s attempts to use the suspended grant, %(succeeded)s of them not refused "
        "(%(actions)s)."
    ),
    Rule.BUDGET_LOW: N_(
        "Privacy budget left: ε %(left)s of %(total)s (%(percent)s%%), below %(below)s%% "
        "of the budget."
    ),
}
SEVERITY_NAMES = {Severity.LOW: N_("low"), Severity.MEDIUM: N_("medium"), Severity.HIGH: N_("high")}
STATE_NAMES = {AlertState.OPEN: N_("open"), AlertState.ACKNOWLEDGED: N_("acknowledged")}
UNITS = ((86_400, N_("%(n)s d")), (3_600, N_("%(n)s h")), (60, N_("%(n)s min")), (1, N_("%(n)s s")))
# What narrows the trail's search to an alert's entries, by rule.
TRAIL_FILTERS: dict[Rule, dict[str, str]] = {
    Rule.DENIED_BURST: {"outcome": "denied"},
    Rule.ORGANIZATION_DENIED_BURST: {"outcome": "denied"},
    Rule.SIGN_IN_FAILURES: {"action": "session.login", "outcome": "failed"},
    Rule.DOWNLOAD_BURST: {"action": "export.download"},
    Rule.OFF_HOURS: {"action": "sandbox."},
}


# ---------------------------------------------------------------------- words
def duration_text(seconds: int, _: Callable[[str], str]) -> str:
    for size, unit in UNITS:
        if seconds >= size and seconds % size == 0:
            return _(unit) % {"n": seconds // size}
    return _("%(n)s s") % {"n": seconds}


def _listed(values: Any, more: bool) -> str:
    items = [str(v) for v in values] if isinstance(values, list) else []
    text = ", ".join(items) if items else "—"  # codes and days, the same in every language
    return f"{text}…" if more else text


def _epsilon(micro: int) -> str:
    return f"{micro / 1_000_000:.6f}".rstrip("0").rstrip(".")


def describe(alert: Alert, gettext: Callable[[str], str]) -> str:
    """What happened, in the language of ``gettext``."""
    _, facts = gettext, alert.facts
    values: dict[str, Any] = {
        "count": alert.count,
        "threshold": facts.get("threshold", ""),
        "window": duration_text(int(facts.get("window", 0)), _),
        "hours": facts.get("hours", ""),
    }
    for name in ("blocked", "refused", "succeeded", "starts", "cells"):
        values[name] = facts.get(name, 0)
    for name in ("actions", "days"):
        values[name] = _listed(facts.get(name), bool(facts.get(f"{name}_more")))
    for name in ("people", "exports"):
        found = facts.get(name)
        size = len(found) if isinstance(found, list) else 0
        values[name] = f"{size}+" if facts.get(f"{name}_more") else size
    if alert.rule is Rule.BUDGET_LOW:
        total = int(facts.get("total_micro") or 1)
        left = int(facts.get("left_micro", 0))
        values.update(
            left=_epsilon(left),
            total=_epsilon(total),
            percent=f"{100 * left / total:.1f}".rstrip("0").rstrip("."),
            below=f"{100 * float(facts.get('below', 0)):g}",
        )
    return _(MESSAGES[alert.rule]) % values


def trail_link(alert: Alert) -> str:
    """Where the trail explorer shows the alert's entries: a grant's whole history, or the
    search narrowed to the person or organization, the rule's actions, the days and the
    last entry."""
    kind, ident = alert.subject.partition(":")[::2]
    if kind == "grant":
        return f"/trail/history/grant/{quote(ident, safe='')}"
    params: dict[str, Any] = {}
    if kind == "user" and alert.person_name:
        params["person"] = alert.person_name
    elif kind == "org":
        params["organization"] = ident
    params.update(TRAIL_FILTERS.get(alert.rule, {}))
    params.update(
        since=china_day(alert.first_time),
        until=china_day(alert.last_time),
        before=alert.last_seq + 1,
    )
    return f"/trail?{urlencode(params)}"


# ---------------------------------------------------------------------- plumbing
def alerts_of(found: Services) -> AlertService:
    if found.trail is None:  # a gateway opened without its trail index (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no trail index")
    return AlertService(found.trail, found.writes, found.authorizer)


def helpers(request: Request, found: Services, viewer: Viewer) -> dict[str, Any]:
    """What the templates need to show alerts in the page's language."""
    _ = gettext_for(request)
    organizations = organization_names(found, viewer)
    grants = grant_titles(found, viewer)

    def subject_name(alert: Alert) -> str:
        kind, ident = alert.subject.partition(":")[::2]
        if kind == "user":
            return alert.person_name or ident
        if kind == "org":
            return organizations.get(ident, ident)
        if kind == "grant":
            return grants.get(ident, ident)
        return ident

    return {
        "describe": lambda alert: describe(alert, _),
        "subject_name": subject_name,
        "organization_name": lambda org: organizations.get(org, org) if org else "",
        "rule_names": {str(k): v for k, v in RULE_NAMES.items()},
        "severity_names": {str(k): v for k, v in SEVERITY_NAMES.items()},
        "state_names": {str(k): v for k, v in STATE_NAMES.items()},
        "china_time": partial(china_time, seconds=False),
        "trail_link": trail_link,
        "can_trail": found.authorizer.allows(viewer.account.actor(), "audit_trail", "read"),
    }


# ---------------------------------------------------------------------- the list
@router.get("/alerts")
def alerts_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadAlerts,
    rule: Annotated[Rule | Literal[""], Query()] = "",
) -> Response:
    """Open alerts (newest first), then the latest acknowledged ones."""
    service, actor = alerts_of(found), viewer.account.actor()
    chosen = rule or None
    opened = service.list_alerts(
        actor, AlertQuery(rule=chosen, state=AlertState.OPEN, limit=OPEN_LISTED)
    )
    acknowledged = service.list_alerts(
        actor, AlertQuery(rule=chosen, state=AlertState.ACKNOWLEDGED, limit=ACKNOWLEDGED_LISTED)
    )
    return render(
        request,
        "alerts.html",
        viewer=viewer,
        opened=opened.alerts,
        more_open=opened.next_before is not None,
        acknowledged=acknowledged.alerts,
        chosen=str(chosen or ""),
        rules=[str(item) for item in Rule],
        h=helpers(request, found, viewer),
    )


# ---------------------------------------------------------------------- an alert
@router.get("/alerts/{alert_id}")
def alert_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadAlerts,
    alert_id: AlertId,
    notice: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    return detail_page(request, found, viewer, alert_id, notice=notice == "acknowledged")


def detail_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    alert_id: str,
    *,
    notice: bool = False,
    failure: Failure | None = None,
    kept: Mapping[str, str] | None = None,
) -> Response:
    service, actor = alerts_of(found), viewer.account.actor()
    try:
        alert = service.get(actor, alert_id)
    except Denied as exc:
        return render(request, "refused.html", viewer=viewer, reason=exc.reason, status_code=403)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    entries = service.entries(actor, alert, limit=ENTRIES_SHOWN)
    may_acknowledge = (
        alert.state is AlertState.OPEN
        and found.authorizer.allows(actor, "alert", "acknowledge")
        and alert.person != actor.user
    )
    return render(
        request,
        "alerts_detail.html",
        viewer=viewer,
        alert=alert,
        entries=entries,
        more_entries=alert.count > len(entries),
        may_acknowledge=may_acknowledge,
        about_yourself=alert.person == actor.user,
        notice=notice,
        failure=failure,
        kept=kept or {},
        max_note=MAX_NOTE,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/alerts/{alert.id}",
        h=helpers(request, found, viewer),
    )


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge_alert(
    request: Request, found: ServicesDep, viewer: ReadAlerts, alert_id: AlertId
) -> Response:
    """Acknowledge the alert with a note (recorded in the ledger); the service decides
    whether the viewer may."""
    values = await posted(request, "note")
    done = await attempt(
        run_in_threadpool(
            alerts_of(found).acknowledge, viewer.account.actor(), alert_id, values["note"]
        )
    )
    if isinstance(done, Failure):
        return await run_in_threadpool(
            detail_page, request, found, viewer, alert_id, failure=done, kept=values
        )
    return RedirectResponse(
        f"/alerts/{done.id}?notice=acknowledged", status_code=status.HTTP_303_SEE_OTHER
    )
