"""Deciding requests from a compiled, immutable index of the Casbin policy.

pycasbin's ``enforce()`` evaluates the matcher expression on every call (milliseconds at
thousands of policy lines) and shares mutable state between threads. The index here is
built once from an enforcer, whenever the policy or a role grant changes, and then only
read: a decision is a handful of set lookups, safe from any number of threads. It holds
exactly what the model in ``policies/model.conf`` means:

    allow(sub, dom, obj, act) =  some line (role, d, obj, act, allow) with
                                    role in roles(sub, dom) and d in (dom, "*")
                                 and no such line with effect deny

where ``roles(sub, dom)`` is the subject itself and every role it holds in ``dom``,
directly or through roles that hold roles (Casbin's implicit roles). A test compares
:meth:`Decisions.allows` with Casbin's ``enforce`` for every combination of subjects,
domains, objects and actions that the policy and grants name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import casbin

from gateway.authz.policy import ANY_DOMAIN

Key = tuple[str, str, str, str]  # (role or subject, domain, object, action)


@dataclass(frozen=True)
class Decisions:
    """An immutable answer table; build it with :meth:`compile`."""

    roles: Mapping[tuple[str, str], tuple[str, ...]]
    allowed: frozenset[Key]
    denied: frozenset[Key]

    @classmethod
    def compile(cls, enforcer: casbin.Enforcer) -> Decisions:
        allowed: set[Key] = set()
        denied: set[Key] = set()
        for sub, dom, obj, act, effect in enforcer.get_policy():
            (allowed if effect == "allow" else denied).add((sub, dom, obj, act))
        roles: dict[tuple[str, str], tuple[str, ...]] = {}
        for sub, _role, dom in enforcer.get_grouping_policy():
            if (sub, dom) not in roles:
                implicit = enforcer.get_implicit_roles_for_user(sub, dom)
                roles[(sub, dom)] = (sub, *implicit)
        return cls(MappingProxyType(roles), frozenset(allowed), frozenset(denied))

    def allows(self, sub: str, dom: str, obj: str, act: str) -> bool:
        """Whether the policy allows ``sub`` acting in ``dom`` to ``act`` on ``obj``."""
        allowed = False
        for role in self.roles.get((sub, dom), (sub,)):
            for domain in (dom, ANY_DOMAIN):
                key = (role, domain, obj, act)
                if key in self.denied:
                    return False
                if not allowed and key in self.allowed:
                    allowed = True
        return allowed

    def roles_of(self, sub: str, dom: str) -> tuple[str, ...]:
        """The roles ``sub`` holds in ``dom`` (without the subject itself)."""
        return self.roles.get((sub, dom), (sub,))[1:]
