"""The home page: who you are, and what your roles let you do here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.api.deps import ServicesDep
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.render import render

router = APIRouter(include_in_schema=False)

ROLE_NAMES = {
    "applicant": N_("Applicant"),
    "provider_steward": N_("Data provider steward"),
    "reviewer": N_("Reviewer"),
    "approver": N_("Approver"),
    "regulator": N_("Regulator"),
    "admin": N_("Administrator"),
}
ORGANIZATION_TYPES = {
    "provider": N_("Data provider"),
    "application_unit": N_("Application unit"),
    "operator": N_("Operator"),
    "regulator": N_("Regulator"),
}
# What each role comes here for, in the order the home page lists it.
ROLE_TASKS = {
    "applicant": [
        N_("Browse the catalog of public data and apply for the fields you need."),
        N_("Work in a sandbox on the desensitized views you were granted."),
        N_("Request exports of results; reviewers check them before anything leaves."),
    ],
    "provider_steward": [
        N_("Describe your datasets in the catalog and upload their versions."),
        N_("Consent to applications for conditionally shared data."),
        N_("Answer quality objections within five working days."),
    ],
    "reviewer": [
        N_("Check applications and draft opinions with a risk assessment."),
        N_("Review export requests against the disclosure checks."),
    ],
    "approver": [
        N_("Decide on applications and exports after a reviewer's opinion."),
        N_("Suspend a grant at once when its use breaks the agreement."),
    ],
    "regulator": [
        N_("Inspect the audit trail and verify it without trusting the operator."),
        N_("Take evidence bundles away for offline verification."),
    ],
    "admin": [
        N_("Register organizations, verify their real names and manage their users."),
        N_("Grant and revoke roles; every change is recorded."),
    ],
}


@router.get("/")
def home(
    request: Request,
    found: ServicesDep,
    viewer: Annotated[Viewer, Depends(Page(None, None))],
) -> Response:
    roles = sorted(viewer.account.roles, key=list(ROLE_NAMES).index)
    tasks = [(role, ROLE_TASKS[role]) for role in roles if role in ROLE_TASKS]
    ledger = None
    if found.authorizer.allows(viewer.account.actor(), "audit_trail", "read"):
        latest = found.ledger.latest_checkpoint()
        ledger = {"size": found.ledger.size, "checkpoint": latest}
    return render(
        request,
        "home.html",
        viewer=viewer,
        roles=roles,
        role_names=ROLE_NAMES,
        organization_types=ORGANIZATION_TYPES,
        tasks=tasks,
        ledger=ledger,
    )
