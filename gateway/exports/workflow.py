"""The way of an export request, as data: who acts at each status and where it goes.

::

    uploading --submit--> blocked                       (an automated check blocks it)
    uploading --submit--> review --reviewer--> approval --approver--> released
                                                      \\--approver (high risk)--> second_approval
    second_approval --another approver--> released
    review | approval | second_approval --refuse--> rejected

A reviewer drafts an opinion (approve or refuse, with reasons and a risk assessment); an
approver who did not draft it decides; a high-risk export needs a second approver, who is
neither the reviewer nor the first approver. Nobody of the requesting organization takes
any of these steps (``policies/duties.toml``).
"""

from __future__ import annotations

from gateway.db.models import ExportRisk, ExportStatus

# the status at which a person acts -> (the policy's action, where approval leads)
STEPS: dict[ExportStatus, tuple[str, ExportStatus]] = {
    ExportStatus.REVIEW: ("review", ExportStatus.APPROVAL),
    ExportStatus.APPROVAL: ("approve", ExportStatus.RELEASED),
    ExportStatus.SECOND_APPROVAL: ("approve", ExportStatus.RELEASED),
}
OPEN = frozenset({ExportStatus.UPLOADING, *STEPS})
CLOSED = frozenset({ExportStatus.BLOCKED, ExportStatus.RELEASED, ExportStatus.REJECTED})


def next_status(current: ExportStatus, approve: bool, risk: ExportRisk) -> ExportStatus:
    """Where an export at ``current`` goes on a person's ``approve`` or refusal."""
    if current not in STEPS:
        raise ValueError(f"nobody decides on an export that is {current}")
    if not approve:
        return ExportStatus.REJECTED
    if current is ExportStatus.APPROVAL and risk is ExportRisk.HIGH:
        return ExportStatus.SECOND_APPROVAL
    return STEPS[current][1]


def higher(*risks: ExportRisk | None) -> ExportRisk:
    """The highest of ``risks``: a reviewer may raise the checks' risk, never lower it."""
    return ExportRisk.HIGH if ExportRisk.HIGH in risks else ExportRisk.NORMAL
