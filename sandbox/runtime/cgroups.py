"""Memory, process-count and CPU limits of a sandbox, through control groups.

Each sandbox gets the group ``sbx/<name>``: under every controller's hierarchy on a
cgroup v1 host (``/sys/fs/cgroup/memory/sbx/<name>``, ``.../pids/...``, ``.../cpu/...``),
or once in the unified hierarchy on a cgroup v2 host. Its first process joins the group
before it drops root (:meth:`Cgroup.join`, called between fork and exec), so everything
the sandbox ever starts is counted. Swap is limited with memory where the kernel accounts
it, so a memory hog cannot page its way past the limit.

Where no hierarchy is writable (an unprivileged caller, a container without delegation)
:func:`cgroup_for` returns ``None`` and the runtime falls back to per-process resource
limits (:func:`limit_processes`), which it reports: weaker, since they bound each process
rather than the sandbox as a whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.runtime.spec import Limits, SandboxError

ROOT = Path("/sys/fs/cgroup")
PARENT = "sbx"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD = 100_000


@dataclass(frozen=True)
class Cgroup:
    """The control group(s) of one sandbox: one folder per v1 controller, or one v2 folder."""

    name: str
    folders: tuple[Path, ...]
    unified: bool

    def create(self, limits: Limits) -> None:
        """Make the groups and write the limits (idempotent)."""
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        if self.unified:
            (folder,) = self.folders
            _write(folder / "memory.max", limits.memory_bytes)
            _write(folder / "memory.swap.max", 0, optional=True)
            _write(folder / "pids.max", limits.pids)
            _write(folder / "cpu.max", f"{int(limits.cpus * CPU_PERIOD)} {CPU_PERIOD}")
            return
        memory, pids, cpu = self.folders
        # memory+swap may never be below memory: lift it first, so that a group made earlier
        # with a smaller limit takes the new one.
        _write(memory / "memory.memsw.limit_in_bytes", -1, optional=True)
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes, optional=True)
        _write(pids / "pids.max", limits.pids)
        _write(cpu / "cpu.cfs_period_us", CPU_PERIOD)
        _write(cpu / "cpu.cfs_quota_us", int(limits.cpus * CPU_PERIOD))

    def join(self) -> None:
        """Move the calling process into the groups. Called in a child between fork and exec,
        so it only writes files."""
        pid = str(os.getpid()).encode()
        for folder in self.folders:
            descriptor = os.open(folder / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(descriptor, pid)
            finally:
                os.close(descriptor)

    def pids(self) -> set[int]:
        """Every process in the sandbox now."""
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(FileNotFoundError):
                found |= {int(line) for line in (folder / "cgroup.procs").read_text().split()}
        return found

    def memory_peak(self) -> int | None:
        name = "memory.peak" if self.unified else "memory.max_usage_in_bytes"
        try:
            return int((self.folders[0] / name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many times the kernel's OOM killer acted in the sandbox."""
        folder = self.folders[0]
        name = "memory.events" if self.unified else "memory.oom_control"
        try:
            text = (folder / name).read_text()
        except FileNotFoundError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_all(self, grace: float = 2.0) -> None:
        """Stop every process in the sandbox: SIGTERM, then SIGKILL after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.pids():
                return

    def remove(self) -> None:
        """Stop what runs in the groups and remove them (idempotent)."""
        self.kill_all()
        for folder in self.folders:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY while the last process is reaped
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.05)


def cgroup_for(name: str, root: Path = ROOT) -> Cgroup | None:
    """The groups of sandbox ``name``, or ``None`` when no hierarchy here is writable."""
    if (root / "cgroup.controllers").exists():
        parent = root / PARENT
        if _writable(parent, root) and _v2_ready(root, parent):
            return Cgroup(name, (parent / name,), unified=True)
        return None
    folders = tuple(root / controller / PARENT / name for controller in V1_CONTROLLERS)
    if all(_writable(folder.parent, folder.parent.parent) for folder in folders):
        return Cgroup(name, folders, unified=False)
    return None


def limit_processes(limits: Limits) -> None:
    """The fallback for ``pids`` when no control group is writable: the number of processes
    of the uid (applied between fork and exec)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))


def limit_writes(limits: Limits) -> None:
    """No file may grow past the workspace's size: the whole limit where the workspace is a
    plain folder, a second line of defence where it is a file system of its own."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.disk_bytes, limits.disk_bytes))


def _writable(folder: Path, parent: Path) -> bool:
    if folder.exists():
        return os.access(folder, os.W_OK)
    return parent.exists() and os.access(parent, os.W_OK)


def _v2_ready(root: Path, parent: Path) -> bool:
    """cgroup v2 needs the controllers enabled for the children of ``sbx``."""
    wanted = {"memory", "pids", "cpu"}
    available = set((root / "cgroup.controllers").read_text().split())
    if not wanted <= available:
        return False
    try:
        parent.mkdir(exist_ok=True)
        enabled = set((root / "cgroup.subtree_control").read_text().split())
        for controller in sorted(wanted - enabled):
            _write(root / "cgroup.subtree_control", f"+{controller}")
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
    except OSError:
        return False
    return True


def _write(path: Path, value: object, *, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except FileNotFoundError:
        if not optional:
            raise SandboxError(f"the control group file {path} is missing") from None
    except OSError as exc:
        if optional and exc.errno in (errno.EINVAL, errno.EACCES, errno.EPERM):
            return
        raise SandboxError(f"cannot set {path.name} of {path.parent}: {exc.strerror}") from exc
