"""The stage of a sandbox: its workspace (kept across restarts, with a size limit) and its
views, mounted where the sandbox's uid can reach them.

With root and loop devices (the embedded default), the workspace is an ext4 file system
in a sparse image file (``<state>/workspace.img``, in the owner-only data directory),
mounted ``nosuid,nodev`` on ``<stage>/workspace`` while the sandbox runs: a full
workspace is the applicant's own ``ENOSPC``, never the host's. The image only takes the
blocks written to it. The grant's views are bind-mounted read-only on ``<stage>/data``.
Without root the workspace is a plain folder of the stage, bounded per file with
``RLIMIT_FSIZE`` (:func:`sandbox.runtime.cgroups.limit_writes`), and the views are used
from where they are.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from sandbox.runtime.spec import SandboxError, SandboxSpec

MOUNT_OPTIONS = "loop,nosuid,nodev"


def loop_available() -> bool:
    return (
        os.geteuid() == 0
        and Path("/dev/loop-control").exists()
        and shutil.which("mkfs.ext4") is not None
        and shutil.which("debugfs") is not None
        and shutil.which("mount") is not None
    )


RUN_BYTES = 16 << 20  # sockets and connection files


def is_mounted(folder: Path) -> bool:
    """Whether something is mounted on ``folder`` (bind mounts of the same file system
    included, which :func:`os.path.ismount` misses)."""
    target = os.path.realpath(folder)
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            point = line.split(" ", 5)[4]
            if _unescape(point) == target:
                return True
    return False


def _unescape(path: str) -> str:
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def unmount(folder: Path, *, busy_for: float = 5.0) -> None:
    """Unmount everything stacked on ``folder`` (idempotent). A mount still busy (the
    sandbox's last processes are being reaped) is tried again for ``busy_for`` seconds."""
    deadline = time.monotonic() + busy_for
    for _ in range(16):
        while is_mounted(folder):
            try:
                _run("umount", str(folder))
                break
            except SandboxError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        else:
            return
    raise SandboxError(f"{folder} stays mounted")


def mount_run(spec: SandboxSpec) -> None:
    """A small tmpfs of the sandbox's own for its sockets (idempotent): the sandbox can
    write there, so it must not be the host's disk."""
    spec.run.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() != 0:
        return
    if not is_mounted(spec.run):
        options = f"size={RUN_BYTES},mode=0700,uid={spec.uid},gid={spec.gid},nosuid,nodev,noexec"
        _run("mount", "-t", "tmpfs", "-o", options, "sbx-run", str(spec.run))


def mount_views(spec: SandboxSpec) -> Path:
    """Bind the views read-only on the stage (idempotent); the folder to bind into the
    sandbox at ``/data``."""
    if os.geteuid() != 0:
        return spec.views
    share_views(spec)
    bind_read_only(spec.views, spec.data, "nosuid,nodev,noexec")
    return spec.data


def mount_environment(spec: SandboxSpec) -> Path:
    """Bind the sandbox's Python environment read-only on the stage (idempotent), so that
    the uid reaches it wherever it is installed (even below an owner-only folder); the
    folder to bind into the sandbox at the environment's own path."""
    if os.geteuid() != 0:
        return spec.python
    bind_read_only(spec.python, spec.environment, "nosuid,nodev")
    return spec.environment


def bind_read_only(source: Path, target: Path, options: str) -> None:
    target.mkdir(mode=0o755, exist_ok=True)
    if not is_mounted(target):
        _run("mount", "--bind", str(source), str(target))
        _run("mount", "-o", f"remount,bind,ro,{options}", str(target))


def share_views(spec: SandboxSpec) -> None:
    """Let the grant's group read its views (and nobody else): group ``spec.gid``, ``g+rX``,
    nothing for others. The views stay root's, so no sandbox can change them."""
    for folder, _, files in os.walk(spec.views):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            info = os.lstat(name)
            if stat.S_ISLNK(info.st_mode):
                continue
            os.chown(name, 0, spec.gid)
            mode = stat.S_IMODE(info.st_mode) & 0o700
            os.chmod(name, mode | (0o050 if stat.S_ISDIR(info.st_mode) else 0o040))


def unmount_views(spec: SandboxSpec) -> None:
    unmount(spec.data)
    unmount(spec.environment)


def mount_workspace(spec: SandboxSpec) -> bool:
    """Make the workspace ready for ``spec`` (idempotent). True if it has a size limit of
    its own (a mounted image), False if it is a plain folder."""
    workspace = spec.workspace
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_mounted(workspace):
        return True
    if not loop_available():
        _own(workspace, spec)
        return False
    image = spec.state / "workspace.img"
    spec.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not image.exists():
        partial = image.with_suffix(".img.partial")
        with open(partial, "wb") as handle:
            handle.truncate(spec.limits.disk_bytes)
        _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            f"root_owner={spec.uid}:{spec.gid}",
            str(partial),
        )
        _run("debugfs", "-w", "-R", "rmdir lost+found", str(partial))
        os.chmod(partial, 0o600)
        partial.rename(image)
    _run("mount", "-o", MOUNT_OPTIONS, str(image), str(workspace))
    _own(workspace, spec)
    return True


def unmount_workspace(spec: SandboxSpec) -> None:
    """Unmount the workspace image, keeping its content (idempotent)."""
    unmount(spec.workspace)


def _own(folder: Path, spec: SandboxSpec) -> None:
    if os.geteuid() == 0:
        os.chown(folder, spec.uid, spec.gid)
    os.chmod(folder, 0o700)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise SandboxError(f"{command[0]} failed: {reason[-1] if reason else result.returncode}")
