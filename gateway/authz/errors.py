"""Errors of authorization.

::

    AuthorizationError
    ├── PolicyError           the policy files are malformed; nothing was loaded
    └── Denied                a request is refused (by the policy or a duty rule); says why
"""

from __future__ import annotations


class AuthorizationError(Exception):
    """Base class of the errors of :mod:`gateway.authz`."""


class PolicyError(AuthorizationError):
    """A policy file is malformed; the policy in force stays as it was."""


class Denied(AuthorizationError):
    """A request is refused; ``reason`` is safe to show to the person refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
