"""The embedded default runtime: Linux namespaces through bubblewrap.

A sandbox is two nested namespaces, both entered as the applicant's own uid:

- the **server** namespace holds the trusted Jupyter server. It shares the host's network
  (the hub and the proxy must reach it) but sees only ``/usr``, the sandbox's Python
  environment, the views, the workspace and its sockets; its own pid, ipc and uts
  namespaces; no capabilities. From it the kernel provisioner starts kernels in
- the **kernel** namespace, where the applicant's code runs: no network namespace at all
  beyond its own loopback, its own pid/ipc/uts namespaces, no capabilities, no further
  user namespaces, read-only ``/usr``, Python environment and ``/data``, the writable
  workspace, a private size-limited ``/tmp``, a read-only root.

``sbx sandbox run`` starts a command directly in a kernel namespace.

bubblewrap runs unprivileged (in a user namespace that maps the applicant's uid to
itself), so a process that escaped every namespace would still be that uid, never root.
The runtime mounts what a sandbox sees on its stage (:mod:`sandbox.runtime.disk`), so
the data directory stays owner-only while the uid reaches the views and the workspace.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sandbox.runtime.cgroups import Cgroup, cgroup_for, limit_processes, limit_writes
from sandbox.runtime.disk import (
    mount_environment,
    mount_run,
    mount_views,
    mount_workspace,
    unmount,
    unmount_views,
    unmount_workspace,
)
from sandbox.runtime.spec import DATA, HOME, RUN, USERNAME, SandboxError, SandboxSpec

KERNEL_OOM_SCORE = 1000  # the kernel's processes die first when the sandbox runs out
SERVER_OOM_SCORE = -500  # ...and the trusted server last
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = ("localtime", "ld.so.cache", "mime.types", "nsswitch.conf")
ETC_FOLDERS = ("alternatives", "fonts", "ssl/certs")


class Profile(enum.StrEnum):
    KERNEL = "kernel"  # the applicant's code: no network, nothing further to unshare
    SERVER = "server"  # the trusted Jupyter server: host network, may start kernels


@dataclass(frozen=True)
class Binding:
    """One mount inside the sandbox: ``source`` is a host path or an open descriptor."""

    source: Path | int
    dest: str
    writable: bool = False

    def arguments(self) -> list[str]:
        if isinstance(self.source, int):
            flag = "--bind-fd" if self.writable else "--ro-bind-fd"
            return [flag, str(self.source), self.dest]
        return ["--bind" if self.writable else "--ro-bind", str(self.source), self.dest]


@dataclass(frozen=True)
class Isolation:
    """Everything bubblewrap is told, as data (tested without running it)."""

    bindings: Sequence[Binding]
    env: Mapping[str, str]
    profile: Profile = Profile.KERNEL
    tmp_bytes: int = 256 << 20
    hostname: str = "sandbox"
    chdir: str = HOME

    def command(self, argv: Sequence[str], bwrap: str = "bwrap") -> list[str]:
        if not argv:
            raise SandboxError("no command to run in the sandbox")
        args = [bwrap, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if self.profile is Profile.KERNEL:
            args += ["--unshare-net", "--disable-userns", "--assert-userns-disabled"]
        args += ["--hostname", self.hostname]
        args += ["--ro-bind", "/usr", "/usr"]
        for name in MERGED_USR:
            if Path(f"/{name}").is_symlink():
                args += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
        for name in ETC_FILES + ETC_FOLDERS:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--size", str(self.tmp_bytes), "--tmpfs", "/tmp"]  # noqa: S108 - its own
        for binding in self.bindings:
            args += binding.arguments()
        args += ["--remount-ro", "/", "--chdir", self.chdir, "--clearenv"]
        for key, value in sorted(self.env.items()):
            args += ["--setenv", key, value]
        return [*args, "--", *argv]


def sandbox_env(spec: SandboxSpec, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of sandboxed code: nothing is inherited from the host."""
    env = {
        "HOME": HOME,
        "USER": USERNAME,
        "LOGNAME": USERNAME,
        "PATH": f"{spec.python}/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
        "PYTHONNOUSERSITE": "1",
        "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
        "SBX_DATA": DATA,
    }
    env.update(spec.env)
    env.update(extra or {})
    return env


def kernel_isolation(python: Path, run: str, env: Mapping[str, str], tmp_bytes: int) -> Isolation:
    """The kernel namespace as started from inside the server namespace, where the views,
    the workspace and the sockets already sit at their sandbox paths."""
    return Isolation(
        bindings=(
            Binding(python, str(python)),
            Binding(Path(DATA), DATA),
            Binding(Path(HOME), HOME, writable=True),
            Binding(Path(run), RUN, writable=True),
        ),
        env=env,
        profile=Profile.KERNEL,
        tmp_bytes=tmp_bytes,
    )


class BubblewrapRuntime:
    """Makes, enters and removes sandboxes with bubblewrap, cgroups and loop-mounted
    workspaces. Methods that set up the host (:meth:`prepare`, :meth:`release`) need root;
    :meth:`launch` drops to the sandbox's uid before bubblewrap runs."""

    name = "bwrap"

    def __init__(self, bwrap: str | None = None, cgroups: Path | None = None) -> None:
        found = bwrap or shutil.which("bwrap")
        if found is None:
            raise SandboxError("bubblewrap (bwrap) is not installed")
        self.bwrap = found
        self.cgroup_root = cgroups

    def cgroup(self, spec: SandboxSpec) -> Cgroup | None:
        if self.cgroup_root is None:
            return cgroup_for(spec.name)
        return cgroup_for(spec.name, self.cgroup_root)

    def prepare(self, spec: SandboxSpec) -> dict[str, bool]:
        """Set up the host for ``spec`` (idempotent): its stage, its control groups, its
        workspace and views. Returns which limits hold for the sandbox as a whole
        (``cgroups``, ``disk``)."""
        if not spec.views.is_dir():
            raise SandboxError(f"the views folder {spec.views} does not exist")
        spec.stage.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(spec.stage, 0o711)  # noqa: S103 - traversable, not listable
        spec.etc.mkdir(mode=0o755, exist_ok=True)
        (spec.etc / "passwd").write_text(
            f"{USERNAME}:x:{spec.uid}:{spec.gid}:{USERNAME}:{HOME}:/usr/sbin/nologin\n"
        )
        (spec.etc / "group").write_text(f"{USERNAME}:x:{spec.gid}:\n")
        mount_run(spec)
        cgroup = self.cgroup(spec)
        if cgroup is not None:
            cgroup.create(spec.limits)
        disk = mount_workspace(spec)
        mount_views(spec)
        mount_environment(spec)
        return {"cgroups": cgroup is not None, "disk": disk}

    def isolation(
        self,
        spec: SandboxSpec,
        *,
        profile: Profile = Profile.KERNEL,
        env: Mapping[str, str] | None = None,
        extra: Sequence[Binding] = (),
    ) -> Isolation:
        """How ``spec`` is isolated, ``extra`` binding more (e.g. the server's settings)."""
        root = os.geteuid() == 0
        data = spec.data if root else spec.views
        python = spec.environment if root else spec.python
        return Isolation(
            bindings=(
                Binding(python, str(spec.python)),
                Binding(data, DATA),
                Binding(spec.workspace, HOME, writable=True),
                Binding(spec.run, RUN, writable=True),
                *extra,
                Binding(spec.etc / "passwd", "/etc/passwd"),
                Binding(spec.etc / "group", "/etc/group"),
            ),
            env=sandbox_env(spec, env),
            profile=profile,
            tmp_bytes=spec.limits.tmp_bytes,
        )

    def launch(
        self,
        spec: SandboxSpec,
        argv: Sequence[str],
        *,
        profile: Profile = Profile.KERNEL,
        env: Mapping[str, str] | None = None,
        extra: Sequence[Binding] = (),
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a sandbox prepared by :meth:`prepare`, as the sandbox's uid."""
        command = self.isolation(spec, profile=profile, env=env, extra=extra).command(
            argv, self.bwrap
        )
        return subprocess.Popen(  # noqa: S603 - argv is built above, never a shell
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=self._entry(spec, profile),  # noqa: PLW1509
            close_fds=True,
        )

    def release(self, spec: SandboxSpec) -> None:
        """Stop everything running in the sandbox and unmount its stage, keeping the
        workspace's content (idempotent)."""
        cgroup = self.cgroup(spec)
        if cgroup is not None:
            cgroup.remove()
        failures = []
        for step in (unmount_views, unmount_workspace, lambda found: unmount(found.run)):
            try:  # every step, whatever one of them met
                step(spec)
            except SandboxError as exc:
                failures.append(str(exc))
        if failures:
            raise SandboxError("; ".join(failures))

    def _entry(self, spec: SandboxSpec, profile: Profile) -> Callable[[], None]:
        """What the child does between fork and exec: join the control groups, set its OOM
        priority, and drop root for the sandbox's uid (or fall back to per-process limits)."""
        cgroup = self.cgroup(spec) if os.geteuid() == 0 else None
        score = KERNEL_OOM_SCORE if profile is Profile.KERNEL else SERVER_OOM_SCORE
        uid, gid, limits = spec.uid, spec.gid, spec.limits

        def enter() -> None:
            if cgroup is not None:
                cgroup.join()
            else:
                limit_processes(limits)
            limit_writes(limits)
            with contextlib.suppress(OSError):
                with open("/proc/self/oom_score_adj", "w") as handle:
                    handle.write(str(score))
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            if os.geteuid() != uid:
                raise SandboxError("the sandbox must be entered as its own uid")

        return enter
