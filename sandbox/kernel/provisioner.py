"""The kernel provisioner of sandboxes: each kernel in a kernel namespace of its own, and
the server's kernel manager connected to it only through an :class:`AuditingProxy`.

It runs in the trusted Jupyter server (the server namespace) and reads its settings from
that process's environment:

=====================  ==============================================================
``SBX_RECORD_URL``     the recording endpoint; without it no kernel starts
``SBX_RECORD_TOKEN``   the server's bearer token for it (never passed to a kernel)
``SBX_SANDBOX_PYTHON`` the sandbox's Python environment (default: this one)
``SBX_TMP_BYTES``      the size of a kernel's private ``/tmp`` (default 256 MiB)
``SBX_BWRAP``          the bubblewrap binary (default ``bwrap``)
``SBX_GRANT``          the grant, passed on to the kernel's environment
``SBX_KERNEL_LAUNCHER`` the hub's kernel routes (the Docker runtime): kernels are then
                       containers the hub starts (:mod:`sandbox.spawner.kernels`), not
                       bubblewrap namespaces the server starts
=====================  ==============================================================

Per kernel, under ``/run/sbx``: ``kernels/<id>/`` holds the kernel's connection file and
sockets and is all of ``/run/sbx`` the kernel sees; ``server/<id>/`` holds the proxy's
frontend sockets and the kernel manager's connection file, out of the kernel's reach.

Override contract: :meth:`pre_launch` returns the launch arguments with the wrapped
command and a minimal environment for bubblewrap (it deliberately does not call the base
class's, which would copy the server's environment, token included); :meth:`launch_kernel`
starts the proxy, then the kernel, and returns the proxy's connection info;
:meth:`cleanup` stops the proxy and removes the kernel's folder (and, unless restarting,
the server's). Interrupts go as ``interrupt_request`` messages (the kernel spec's
``interrupt_mode`` is ``message``): a SIGINT would stop bubblewrap, not interrupt the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from sandbox.kernel.proxy import PORTS, AuditingProxy
from sandbox.kernel.record import HttpRecorder
from sandbox.kernel.remote import RemoteKernel
from sandbox.runtime.bwrap import KERNEL_OOM_SCORE, kernel_isolation
from sandbox.runtime.spec import DATA, HOME, KERNEL_ID, RUN, USERNAME, SandboxError

CONNECTION_FILE = "connection.json"
DEFAULT_TMP_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    """What the provisioner needs, read from the server's environment."""

    record_url: str
    record_token: str
    python: Path
    tmp_bytes: int = DEFAULT_TMP_BYTES
    bwrap: str = "bwrap"
    grant: str = ""
    launcher: str = ""
    run: Path = Path(RUN)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> KernelSettings:
        url = environ.get("SBX_RECORD_URL", "")
        if not url:
            raise SandboxError(
                "SBX_RECORD_URL is not set: sandboxed kernels start only when every cell "
                "they are sent can be recorded"
            )
        token = environ.get("SBX_RECORD_TOKEN", "")
        if not token:
            raise SandboxError("SBX_RECORD_TOKEN is not set: the code record needs its token")
        try:
            tmp_bytes = int(environ.get("SBX_TMP_BYTES") or DEFAULT_TMP_BYTES)
        except ValueError:
            raise SandboxError("SBX_TMP_BYTES must be a number of bytes") from None
        return cls(
            record_url=url,
            record_token=token,
            python=Path(environ.get("SBX_SANDBOX_PYTHON") or sys.prefix),
            tmp_bytes=tmp_bytes,
            bwrap=environ.get("SBX_BWRAP") or "bwrap",
            grant=environ.get("SBX_GRANT", ""),
            launcher=environ.get("SBX_KERNEL_LAUNCHER", ""),
        )

    def kernel_env(self, session_name: str = "") -> dict[str, str]:
        """The kernel's whole environment: nothing of the server's is inherited."""
        env = {
            "HOME": HOME,
            "USER": USERNAME,
            "LOGNAME": USERNAME,
            "PATH": f"{self.python}/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",  # noqa: S108 - the kernel's private tmpfs
            "PYTHONNOUSERSITE": "1",
            "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
            "SBX_DATA": DATA,
        }
        if self.grant:
            env["SBX_GRANT"] = self.grant
        if session_name:
            env["JPY_SESSION_NAME"] = session_name
        return env


class SandboxProvisioner(LocalProvisioner):
    """Starts kernels in a kernel namespace (bubblewrap) or container (through the hub),
    behind an auditing proxy."""

    proxy: AuditingProxy | None = None
    kernel_folder: Path | None = None
    server_folder: Path | None = None
    settings: KernelSettings | None = None
    session_name: str = ""
    remote: RemoteKernel | None = None  # the kernel's container, when the hub runs it

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        settings = KernelSettings.from_environ(os.environ)
        self.settings = settings
        manager = self.parent
        if manager is None:
            raise SandboxError("the sandbox provisioner needs its kernel manager")
        if not KERNEL_ID.match(self.kernel_id or ""):
            raise SandboxError(f"kernel id {self.kernel_id!r} is not a plain name")
        kernel_folder = settings.run / "kernels" / self.kernel_id
        server_folder = settings.run / "server" / self.kernel_id
        _fresh_folder(kernel_folder)
        server_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.kernel_folder, self.server_folder = kernel_folder, server_folder

        key: bytes = manager.session.key
        kernel_info = {
            "transport": "ipc",
            "ip": f"{RUN}/kernel",  # as the kernel sees its folder
            **PORTS,
            "key": key.decode(),
            "signature_scheme": manager.session.signature_scheme,
            "kernel_name": manager.kernel_name,
        }
        _write_private(kernel_folder / CONNECTION_FILE, json.dumps(kernel_info, indent=1))
        backend = {**kernel_info, "ip": str(kernel_folder / "kernel"), "key": key}
        recorder = HttpRecorder(settings.record_url, settings.record_token)
        self.proxy = AuditingProxy(
            self.kernel_id, backend, recorder, server_folder, logger=self.log
        )
        manager.transport = "ipc"
        manager.connection_file = str(server_folder / CONNECTION_FILE)

        session_name = (kwargs.pop("env", None) or {}).get("JPY_SESSION_NAME", "")
        self.session_name = session_name
        kwargs.pop("extra_arguments", None)
        if settings.launcher:  # the hub starts the kernel's container; nothing runs here
            kwargs["cmd"] = kernel_command(settings.python)
            return kwargs
        isolation = kernel_isolation(
            settings.python,
            str(kernel_folder),
            settings.kernel_env(session_name),
            settings.tmp_bytes,
        )
        cwd = kwargs.get("cwd")
        if cwd and Path(cwd).is_relative_to(HOME):
            isolation = dataclasses.replace(isolation, chdir=str(cwd))
        kwargs["cmd"] = isolation.command(kernel_command(settings.python), settings.bwrap)
        kwargs["env"] = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bubblewrap's own
        kwargs["preexec_fn"] = _kernel_oom_score
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        if self.proxy is None:
            raise SandboxError("launch_kernel without pre_launch")
        self.proxy.start()
        try:
            if self.settings is not None and self.settings.launcher:
                await self._launch_remote(str(kwargs.get("cwd") or HOME))
            else:
                await super().launch_kernel(cmd, **kwargs)
        except BaseException:
            self.proxy.stop()
            raise
        self.connection_info = dict(self.proxy.connection_info)  # type: ignore[assignment]
        return self.connection_info

    async def _launch_remote(self, cwd: str) -> None:
        settings = self.settings
        assert settings is not None  # noqa: S101 - set by pre_launch
        start = functools.partial(
            RemoteKernel.start,
            settings.launcher,
            settings.record_token,
            self.kernel_id,
            cwd,
            self.session_name,
        )
        self.remote = await asyncio.get_running_loop().run_in_executor(None, start)
        self.process = self.remote  # type: ignore[assignment] # Popen's parts that are used
        self.pid = self.pgid = None  # signals go through the hub

    async def send_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self.log.warning("a sandboxed kernel is interrupted by message, not by signal")
            return
        await super().send_signal(signum)

    async def cleanup(self, restart: bool = False) -> None:
        remote, self.remote = self.remote, None
        if remote is not None:  # the hub removes the kernel's container
            with contextlib.suppress(SandboxError):
                await asyncio.get_running_loop().run_in_executor(None, remote.remove)
        if self.proxy is not None:
            self.proxy.stop()
        if self.kernel_folder is not None:
            shutil.rmtree(self.kernel_folder, ignore_errors=True)
        if self.server_folder is not None and not restart:
            shutil.rmtree(self.server_folder, ignore_errors=True)
        await super().cleanup(restart=restart)


def kernel_command(python: Path) -> list[str]:
    """The command of every sandboxed kernel, as it runs inside the sandbox."""
    return [
        str(python / "bin" / "python"),
        "-m",
        "ipykernel_launcher",
        "-f",
        f"{RUN}/{CONNECTION_FILE}",
    ]


def _fresh_folder(folder: Path) -> None:
    """An empty folder only this uid may enter (whatever an earlier kernel left is gone:
    the kernel could write there, so nothing in it is trusted)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)


def _write_private(path: Path, text: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, 0o600)
    with open(descriptor, "w") as handle:
        handle.write(text)


_OOM_SCORE = str(KERNEL_OOM_SCORE).encode()


def _kernel_oom_score() -> None:
    """Between fork and exec: the kernel's processes are the first the OOM killer takes.
    Only system calls here, the server being multi-threaded."""
    try:
        descriptor = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.write(descriptor, _OOM_SCORE)
    os.close(descriptor)
