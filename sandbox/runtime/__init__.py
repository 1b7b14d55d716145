"""Isolation runtimes: where sandboxed code runs, and within which limits.

- :mod:`sandbox.runtime.spec` — what a sandbox is (:class:`SandboxSpec`, :class:`Limits`).
- :mod:`sandbox.runtime.bwrap` — the embedded default: bubblewrap, cgroups, loop-mounted
  workspaces.
- :mod:`sandbox.runtime.docker` — production: one container per sandbox through the
  Docker API.
"""

from sandbox.runtime.spec import DATA, HOME, RUN, Limits, SandboxError, SandboxSpec

__all__ = ["DATA", "HOME", "RUN", "Limits", "SandboxError", "SandboxSpec"]
