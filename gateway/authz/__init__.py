"""Authorization: who may do what (Casbin policy) and separation of duties, decided fast.

:class:`Authorizer` is what the rest of the gateway uses. It holds one immutable snapshot
(the policy files as loaded, the compiled :class:`~gateway.authz.decisions.Decisions`),
replaced as a whole when the policy files or the role grants change, so that requests in
flight always see one consistent policy. Every load of the policy files is recorded in the
audit ledger with their digests, before the new policy takes effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.authz.decisions import Decisions
from gateway.authz.duties import UNKNOWN_TARGET, Actor, Target, duty_conflict
from gateway.authz.errors import AuthorizationError, Denied, PolicyError
from gateway.authz.policy import Grant, PolicyFiles, build_enforcer, read_policy_files

__all__ = [
    "Actor",
    "AuthorizationError",
    "Authorizer",
    "Denied",
    "Grant",
    "PolicyError",
    "Target",
]

Record = Callable[[dict[str, Any]], None]
"""Writes an audit entry (the arguments of ``Ledger.append``) durably, or raises."""


@dataclass(frozen=True)
class _Snapshot:
    files: PolicyFiles
    grants: frozenset[Grant]
    decisions: Decisions


class Authorizer:
    """Decides requests; reloads the policy and grants on demand, recording each load."""

    def __init__(self, folder: Path, record: Record, *, actor: str = "system:gateway") -> None:
        self._folder = folder
        self._record = record
        self._snapshot = self._build(read_policy_files(folder), frozenset())
        self._record_load(self._snapshot.files, None, actor)

    # ------------------------------------------------------------------ deciding
    def allows(self, actor: Actor, obj: str, act: str, target: Target | None = None) -> bool:
        """Whether ``actor`` may ``act`` on ``obj`` (policy and duties both)."""
        return self.refusal(actor, obj, act, target) is None

    def refusal(self, actor: Actor, obj: str, act: str, target: Target | None = None) -> str | None:
        """Why ``actor`` may not ``act`` on ``obj``, or ``None`` if they may."""
        snapshot = self._snapshot
        if not snapshot.decisions.allows(actor.user, actor.organization, obj, act):
            return f"your roles do not allow {act} on {obj}"
        return duty_conflict(snapshot.files.duties, actor, f"{obj}:{act}", target or Target())

    def refusal_before_target(self, actor: Actor, obj: str, act: str) -> str | None:
        """Why ``actor`` may not ``act`` on ``obj`` whatever the object turns out to be:
        the policy, and the duties that depend on the actor alone. For the check at the
        door (an API route), before the object is read; the service then checks the rest
        with the object as its target."""
        snapshot = self._snapshot
        if not snapshot.decisions.allows(actor.user, actor.organization, obj, act):
            return f"your roles do not allow {act} on {obj}"
        return duty_conflict(snapshot.files.duties, actor, f"{obj}:{act}", UNKNOWN_TARGET)

    def authorize(self, actor: Actor, obj: str, act: str, target: Target | None = None) -> None:
        """Raise :class:`Denied` unless ``actor`` may ``act`` on ``obj``."""
        reason = self.refusal(actor, obj, act, target)
        if reason is not None:
            raise Denied(reason)

    def roles_of(self, user: str, organization: str) -> frozenset[str]:
        """The role names ``user`` holds in ``organization`` (without the ``role:`` prefix)."""
        held = self._snapshot.decisions.roles_of(user, organization)
        return frozenset(role.removeprefix("role:") for role in held)

    def roles_for_organization_type(self, kind: str) -> frozenset[str]:
        """The roles an organization of type ``kind`` may grant its members."""
        return self._snapshot.files.duties.roles_by_organization_type.get(kind, frozenset())

    @property
    def digest(self) -> str:
        return self._snapshot.files.digest

    # ------------------------------------------------------------------ changing
    def set_grants(self, grants: Iterable[Grant]) -> None:
        """Replace the role grants (the caller records each grant where it makes it)."""
        current = self._snapshot
        self._snapshot = self._build(current.files, frozenset(grants))

    def reload(self, *, actor: str) -> bool:
        """Re-read the policy files; if they changed, record the load and switch to them.
        Raises :class:`PolicyError` (the policy in force stays) if they are malformed."""
        files = read_policy_files(self._folder)
        current = self._snapshot
        if files.digest == current.files.digest:
            return False
        snapshot = self._build(files, current.grants)  # fails before anything is recorded
        self._record_load(files, current.files.digest, actor)
        self._snapshot = snapshot
        return True

    def _build(self, files: PolicyFiles, grants: frozenset[Grant]) -> _Snapshot:
        unknown = {grant.role for grant in grants} - {
            role for roles in files.duties.roles_by_organization_type.values() for role in roles
        }
        if unknown:
            raise PolicyError(f"grants name roles the policy does not know: {sorted(unknown)}")
        decisions = Decisions.compile(build_enforcer(files, sorted(grants, key=Grant.line)))
        return _Snapshot(files, grants, decisions)

    def _record_load(self, files: PolicyFiles, previous: str | None, actor: str) -> None:
        self._record(
            {
                "action": "policy.load",
                "actor": actor,
                "object": f"policy:{files.digest}",
                "outcome": "ok",
                "detail": {
                    "digest": files.digest,
                    "files": files.file_digests(),
                    "previous": previous,
                },
            }
        )
