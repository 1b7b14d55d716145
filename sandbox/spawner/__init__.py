"""JupyterHub's side of sandboxes: the spawner, the authenticator that trusts only the
gateway, sign-on tickets, and the hub's configuration.

The JupyterHub classes load lazily, so that the gateway can use :mod:`.ticket` without
importing JupyterHub.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GatewayAuthenticator", "SandboxSpawner"]


def __getattr__(name: str) -> Any:
    if name == "SandboxSpawner":
        from sandbox.spawner.spawner import SandboxSpawner

        return SandboxSpawner
    if name == "GatewayAuthenticator":
        from sandbox.spawner.auth import GatewayAuthenticator

        return GatewayAuthenticator
    raise AttributeError(name)
