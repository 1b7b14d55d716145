"""An application's path through review (R9–R11), as data.

An application is drafted by an applicant of an application unit and submitted; it then
waits in one queue at a time, each with a deadline in Chinese working days counted from
the day it entered the queue (:mod:`gateway.workdays`):

=============  =======================================  ======  ===========================
status         who acts                                 days    then
=============  =======================================  ======  ===========================
``formal``     a reviewer checks it is complete          5       consent, review or refused
``consent``    each provider of conditional data         5       review (all consent) or
                                                                 refused (one refuses)
``review``     a reviewer drafts an opinion with a       10      approval
               risk assessment
``approval``   an approver, never the opinion's author   5       approved or refused
=============  =======================================  ======  ===========================

The formal check (5) and the substantive review (10) are the regulations' own deadlines
(R11); consent follows the provider's five days for answers (R6); approval's five days
are the operator's own commitment. Every refusal carries its reasons; the applicant may
amend a refused application and submit it again (a new round), or withdraw it before a
decision. :data:`TRANSITIONS` is the whole workflow; the docs draw it from here.
"""

from __future__ import annotations

import enum
from pathlib import Path

from gateway import diagrams
from gateway.db.models import ApplicationStatus
from gateway.identity.model import IdentityError


class Step(enum.StrEnum):
    """What someone does to an application: each step is one ledger action
    (``application.<step>``)."""

    SUBMIT = "submit"
    PASS_CHECK = "check"  # noqa: S105 - a step, not a secret
    REFUSE_CHECK = "check_refuse"
    CONSENT = "consent"
    REFUSE_CONSENT = "consent_refuse"
    REVIEW = "review"
    APPROVE = "approve"
    REJECT = "reject"
    AMEND = "amend"
    WITHDRAW = "withdraw"


S = ApplicationStatus
TRANSITIONS: dict[ApplicationStatus, frozenset[ApplicationStatus]] = {
    S.DRAFT: frozenset({S.FORMAL, S.WITHDRAWN}),
    S.FORMAL: frozenset({S.CONSENT, S.REVIEW, S.REFUSED, S.WITHDRAWN}),
    S.CONSENT: frozenset({S.CONSENT, S.REVIEW, S.REFUSED, S.WITHDRAWN}),
    S.REVIEW: frozenset({S.APPROVAL, S.WITHDRAWN}),
    S.APPROVAL: frozenset({S.APPROVED, S.REFUSED, S.WITHDRAWN}),
    S.APPROVED: frozenset(),
    S.REFUSED: frozenset({S.DRAFT}),  # amended, for another round
    S.WITHDRAWN: frozenset(),
}

# Which status each step starts from.
STEP_FROM: dict[Step, frozenset[ApplicationStatus]] = {
    Step.SUBMIT: frozenset({S.DRAFT}),
    Step.PASS_CHECK: frozenset({S.FORMAL}),
    Step.REFUSE_CHECK: frozenset({S.FORMAL}),
    Step.CONSENT: frozenset({S.CONSENT}),
    Step.REFUSE_CONSENT: frozenset({S.CONSENT}),
    Step.REVIEW: frozenset({S.REVIEW}),
    Step.APPROVE: frozenset({S.APPROVAL}),
    Step.REJECT: frozenset({S.APPROVAL}),
    Step.AMEND: frozenset({S.REFUSED}),
    Step.WITHDRAW: frozenset({S.DRAFT, S.FORMAL, S.CONSENT, S.REVIEW, S.APPROVAL}),
}

# The queues, and the working days each has (R11).
STAGE_DAYS: dict[ApplicationStatus, int] = {
    S.FORMAL: 5,
    S.CONSENT: 5,
    S.REVIEW: 10,
    S.APPROVAL: 5,
}
OPEN = frozenset(STAGE_DAYS)  # statuses in which the operator or a provider owes an answer
FINAL = frozenset(status for status, onward in TRANSITIONS.items() if not onward)


class WorkflowError(IdentityError):
    """The application's status does not allow the step; the message says why."""


def can_change(current: ApplicationStatus, to: ApplicationStatus) -> bool:
    return to in TRANSITIONS[current]


def check_can_change(current: ApplicationStatus, to: ApplicationStatus) -> None:
    if not can_change(current, to):
        raise WorkflowError(f"an application cannot go from {current} to {to}")


def can_take(step: Step, current: ApplicationStatus) -> bool:
    """Whether ``step`` may be taken on an application in ``current`` (for pages)."""
    return current in STEP_FROM[step]


def check_can_take(step: Step, current: ApplicationStatus) -> None:
    if not can_take(step, current):
        allowed = ", ".join(sorted(STEP_FROM[step]))
        raise WorkflowError(
            f"the application is {current}: {step} is taken only when it is {allowed}"
        )


def after_check(conditional: bool) -> ApplicationStatus:
    """Where a formally complete application goes: to the providers of conditional data
    first, else straight to the substantive review."""
    return S.CONSENT if conditional else S.REVIEW


def mermaid() -> str:
    """:data:`TRANSITIONS` as a Mermaid state diagram (docs/explanation/applications.md)."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.DRAFT}"]
    for status, onward in TRANSITIONS.items():
        lines += [f"    {status} --> {to}" for to in sorted(onward) if to is not status]
        if not onward:
            lines.append(f"    {status} --> [*]")
    return "\n".join(lines)


def write_diagram(path: Path) -> None:
    """Put :func:`mermaid` into ``path`` (``make docs``)."""
    diagrams.write_diagram(path, "gateway/applications/workflow.py", mermaid())
