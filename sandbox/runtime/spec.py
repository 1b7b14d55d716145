"""What a sandbox is, independent of the runtime that makes it.

A :class:`SandboxSpec` names one sandbox — one applicant working on one grant — with the
Unix identity its code runs as, the host folders it sees and the limits it lives within.
The spawner, ``sbx sandbox run`` and the kernel provisioner all describe sandboxes this
way; a runtime (:mod:`sandbox.runtime.bwrap`, :mod:`sandbox.runtime.docker`) turns the
description into isolation. Inside every sandbox the layout is the same:

=================  ===========================================================
``/data``          the grant's views, read-only
``/home/jovyan``   the workspace, writable, kept across restarts
``/run/sbx``       sockets between the trusted server and the kernels
``/tmp``           private, size-limited, gone when the sandbox stops
=================  ===========================================================
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = "/data"
HOME = "/home/jovyan"
RUN = "/run/sbx"
USERNAME = "jovyan"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KERNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")  # a Jupyter kernel's id
MIB = 1 << 20


def sandbox_name(uid: int, grant: str, kind: str = "u") -> str:
    """The host-unique name of ``uid``'s sandbox on ``grant``: ``u…`` for notebook servers,
    ``r…`` for ``sbx sandbox run`` (each has its own workspace)."""
    return f"{kind}{uid}-{hashlib.sha256(grant.encode()).hexdigest()[:12]}"


class SandboxError(Exception):
    """A sandbox could not be made, entered or stopped; the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. The runtime enforces each through the strongest means the
    host offers (cgroups, a size-limited file system) and says which it used."""

    memory_bytes: int = 2048 * MIB
    pids: int = 256
    disk_bytes: int = 2048 * MIB
    tmp_bytes: int = 256 * MIB
    cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.memory_bytes < 64 * MIB:
            raise SandboxError("a sandbox needs at least 64 MiB of memory")
        if self.pids < 8:
            raise SandboxError("a sandbox needs at least 8 processes")
        if self.disk_bytes < 16 * MIB or self.tmp_bytes < MIB:
            raise SandboxError("a sandbox needs at least 16 MiB of workspace and 1 MiB of /tmp")
        if not 0 < self.cpus <= 64:
            raise SandboxError("cpus must be between 0 and 64")

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_bytes": self.memory_bytes,
            "pids": self.pids,
            "disk_bytes": self.disk_bytes,
            "tmp_bytes": self.tmp_bytes,
            "cpus": self.cpus,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        return cls(
            memory_bytes=int(data["memory_bytes"]),
            pids=int(data["pids"]),
            disk_bytes=int(data["disk_bytes"]),
            tmp_bytes=int(data["tmp_bytes"]),
            cpus=float(data["cpus"]),
        )


@dataclass(frozen=True)
class SandboxSpec:
    """One sandbox: ``name`` is unique on the host (``[a-z0-9-]``); ``uid`` is the
    applicant's own from the pool and ``gid`` the grant's, never 0 (the grant's group may
    read its views). ``views`` is the grant's views folder and
    ``state`` a private folder of the runtime (the workspace's image), both inside the
    owner-only data directory. ``stage`` is where the runtime mounts what the sandbox sees
    (views, workspace, sockets) for the sandbox's uid to reach; ``python`` is the sandbox's
    own Python environment, mounted read-only at the same path."""

    name: str
    uid: int
    gid: int
    views: Path
    state: Path
    stage: Path
    python: Path
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SandboxError(f"sandbox name {self.name!r} is not [a-z0-9-], 1-63 characters")
        if self.uid <= 0 or self.gid <= 0:
            raise SandboxError("sandboxed code never runs as root")
        for key in self.env:
            if not re.match(r"^[A-Z_][A-Z0-9_]*$", key):
                raise SandboxError(f"environment variable name {key!r} is not allowed")

    @property
    def workspace(self) -> Path:
        return self.stage / "workspace"

    @property
    def run(self) -> Path:
        return self.stage / "run"

    @property
    def data(self) -> Path:
        return self.stage / "data"

    @property
    def etc(self) -> Path:
        return self.stage / "etc"

    @property
    def environment(self) -> Path:
        """Where the stage holds the Python environment for the sandbox's uid to reach."""
        return self.stage / "python"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "views": str(self.views),
            "state": str(self.state),
            "stage": str(self.stage),
            "python": str(self.python),
            "limits": self.limits.to_dict(),
            "env": dict(self.env),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxSpec:
        return cls(
            name=str(data["name"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            views=Path(data["views"]),
            state=Path(data["state"]),
            stage=Path(data["stage"]),
            python=Path(data["python"]),
            limits=Limits.from_dict(data["limits"]),
            env={str(k): str(v) for k, v in dict(data.get("env", {})).items()},
        )
