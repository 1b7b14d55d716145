"""Separation of duties, in one place (REGULATIONS.md R17).

The policy says which roles may do what; these rules hold on top of it, whatever roles a
person holds, for the actions ``policies/duties.toml`` classifies:

1. administrators never touch data content and never decide;
2. nobody reviews or decides on a request of their own organization;
3. nobody decides on what they requested or drafted an opinion on;
4. a two-person decision needs an opinion drafted by someone else first.

:func:`duty_conflict` returns the reason a request breaks a rule (or ``None``);
:func:`check_duties` raises :class:`Denied` with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.authz.errors import Denied
from gateway.authz.policy import Duties

ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """Who acts: a user, the organization they act for and the roles they hold there."""

    user: str
    organization: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Target:
    """What is acted on, as far as duties go: whose request it is, who drafted opinions
    on it. Objects that are nobody's request (a catalog entry) leave these empty."""

    organization: str | None = None  # the organization that requested it
    requested_by: str | None = None  # the user who requested it
    drafted_by: frozenset[str] = field(default_factory=frozenset)  # opinion authors


# A target not read yet: only the rules that depend on the actor alone can be applied.
UNKNOWN_TARGET = Target(drafted_by=frozenset({"*"}))


def duty_conflict(duties: Duties, actor: Actor, action: str, target: Target) -> str | None:
    """The rule ``actor`` would break doing ``action`` (``object:action``) on ``target``."""
    decision = action in duties.decisions
    if ADMIN in actor.roles and (decision or action in duties.data_content):
        return "administrators do not handle data content or take decisions"
    if target is UNKNOWN_TARGET:
        return None
    if (decision or action in duties.reviews) and target.organization == actor.organization:
        return "nobody reviews or decides on a request of their own organization"
    if decision and actor.user == target.requested_by:
        return "nobody decides on what they requested"
    if decision and actor.user in target.drafted_by:
        return "nobody decides on what they drafted an opinion on"
    if action in duties.two_person and not target.drafted_by:
        return "a decision needs an opinion drafted by another person first"
    return None


def check_duties(duties: Duties, actor: Actor, action: str, target: Target) -> None:
    """Raise :class:`Denied` if ``actor`` doing ``action`` on ``target`` breaks a duty."""
    reason = duty_conflict(duties, actor, action, target)
    if reason is not None:
        raise Denied(reason)
