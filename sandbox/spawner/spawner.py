"""``SandboxSpawner``: JupyterHub starts each applicant's server for one grant in a sandbox.

Override contract (JupyterHub's :class:`~jupyterhub.spawner.Spawner`): :meth:`start`
returns the server's address once its process runs; :meth:`poll` returns ``None`` while
it runs and an exit status once it has ended; :meth:`stop` is idempotent; the state that
outlives a hub restart is :meth:`get_state`'s.

Every sandbox is a named server whose name is the grant: ``/user/<user>/<grant>/``. On
start the spawner asks the gateway for a session (the gateway refuses unless the user is
an active member of an active grant, and records the start), prepares the sandbox with the
configured runtime, writes the trusted server's configuration where the sandbox can read
but not change it, and starts ``jupyterhub-singleuser`` in the server namespace. Kernels
start in their own namespace through the ``sbx-sandbox`` provisioner, which records every
execution with the gateway before the kernel sees it.

While the server runs, :meth:`poll` asks the gateway every ``check_interval`` seconds
whether the session is still allowed: a suspended or expired grant stops its servers at
the next check (the gateway also asks the hub to stop them at once). Idle kernels are
culled and an idle server shuts itself down after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Float, Integer, Unicode, default

from sandbox.kernel.kernelspec import server_config, write_kernel_spec
from sandbox.runtime.bwrap import Binding, BubblewrapRuntime, Profile
from sandbox.runtime.spec import Limits, SandboxError, SandboxSpec, sandbox_name
from sandbox.spawner.gateway import GatewayClient, GatewayRefused, SessionGrant

CONFIG = "/etc/sbx/jupyter"  # the server's configuration inside the sandbox (read-only)
PASSED = ("JUPYTERHUB_", "JPY_")


class SandboxSpawner(Spawner):  # type: ignore[misc]
    gateway_url = Unicode(
        "http://127.0.0.1:8000", help="URL of the sbx gateway, as the hub reaches it."
    ).tag(config=True)
    service_token_file = Unicode(
        help="File holding the hub's service token to the gateway (hub-service.token)."
    ).tag(config=True)
    python = Unicode(help="The sandbox's own Python environment (mounted read-only).").tag(
        config=True
    )
    stage_dir = Unicode("/run/sbx", help="Where the runtime mounts what each sandbox sees.").tag(
        config=True
    )
    state_dir = Unicode(help="Private folder for the sandboxes' workspace images and logs.").tag(
        config=True
    )
    bwrap = Unicode("", help="Path of bubblewrap (default: found on PATH).").tag(config=True)
    check_interval = Float(
        3.0, help="Seconds between asking the gateway whether a running session is allowed."
    ).tag(config=True)
    idle_timeout = Integer(
        3600, help="Seconds after which idle kernels are culled and an idle server stops."
    ).tag(config=True)

    @default("poll_interval")
    def _poll_interval(self) -> int:
        return max(1, int(self.check_interval))

    @default("start_timeout")
    def _start_timeout(self) -> int:
        return 60

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.process: Any = None
        self.session: str | None = None
        self.spec: SandboxSpec | None = None
        self._checked = 0.0
        self._runtime: BubblewrapRuntime | None = None

    # ------------------------------------------------------------------ state
    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.session = state.get("session")
        if state.get("spec"):
            self.spec = SandboxSpec.from_dict(state["spec"])

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.session:
            state["session"] = self.session
        if self.spec is not None:
            state["spec"] = self.spec.to_dict()
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.process = None
        self.session = None
        self.spec = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> tuple[str, int]:
        if not self.name:
            raise web.HTTPError(
                400, "a sandbox belongs to a grant: open it from the console's grants page"
            )
        gateway = self._gateway()
        try:
            allowed = await gateway.start_session(self.user.name, self.name)
        except GatewayRefused as exc:
            raise web.HTTPError(exc.status if exc.status < 500 else 503, str(exc)) from None
        self.session = allowed.session
        try:
            spec = self._spec(allowed)
            self.spec = spec
            runtime = self.runtime()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, runtime.prepare, spec)
            await loop.run_in_executor(None, self._write_config, spec)
            self.port = random_port()
            self.ip = "127.0.0.1"
            if self.server is not None:
                self.server.ip, self.server.port = self.ip, self.port
            env = self._server_env(allowed, spec)
            argv = [str(Path(self.python) / "bin" / "jupyterhub-singleuser")]
            log = open(Path(self.state_dir) / f"{spec.name}.log", "ab")  # noqa: SIM115
            try:
                self.process = runtime.launch(
                    spec,
                    argv,
                    profile=Profile.SERVER,
                    env=env,
                    extra=[Binding(spec.stage / "jupyter", CONFIG)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            finally:
                log.close()
        except (SandboxError, OSError) as exc:
            self.log.error("sandbox of %s/%s could not start: %s", self.user.name, self.name, exc)
            await self._halt()
            await self._end("the sandbox could not start")
            raise web.HTTPError(503, f"the sandbox could not start: {exc}") from None
        self.log.info("sandbox %s started for %s on grant %s", spec.name, self.user.name, self.name)
        await self._listening()
        return (self.ip, self.port)

    async def _listening(self) -> None:
        """Return once the server accepts connections (or has ended): the hub then finds it
        up at its first check instead of after its back-off."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.process is not None:
            if self.process.poll() is not None:
                return  # the hub's poll reports it
            try:
                _, writer = await asyncio.open_connection(self.ip, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def poll(self) -> int | None:
        if self.process is None:
            return 0
        status = self.process.poll()
        if status is not None:
            # The server ended on its own (idle shutdown, a crash): the hub may not call
            # stop(), so leave nothing behind here.
            await self._halt()
            await self._end(f"the server ended with status {status}")
            return int(status)
        if self.session and time.monotonic() - self._checked >= self.check_interval:
            self._checked = time.monotonic()
            try:
                active, reason = await self._gateway().session_state(self.session)
            except GatewayRefused as exc:
                active, reason = exc.status >= 500, str(exc)  # keep running if unreachable
            if not active:
                self.log.warning("stopping sandbox of %s/%s: %s", self.user.name, self.name, reason)
                await self._halt()
                await self._end(reason or "no longer allowed")
                return 0
        return None

    async def stop(self, now: bool = False) -> None:
        await self._halt()
        await self._end("stopped")

    # ------------------------------------------------------------------ helpers
    def runtime(self) -> BubblewrapRuntime:
        if self._runtime is None:
            self._runtime = BubblewrapRuntime(self.bwrap or None)
        return self._runtime

    def _gateway(self) -> GatewayClient:
        token = Path(self.service_token_file).read_text().strip()
        return GatewayClient(self.gateway_url, token)

    def _spec(self, allowed: SessionGrant) -> SandboxSpec:
        name = sandbox_name(allowed.uid, allowed.grant)
        limits = Limits.from_dict(allowed.limits)
        return SandboxSpec(
            name=name,
            uid=allowed.uid,
            gid=allowed.gid,
            views=Path(allowed.views),
            state=Path(self.state_dir) / name,
            stage=Path(self.stage_dir) / name,
            python=Path(self.python),
            limits=limits,
            env={"SBX_GRANT": allowed.grant},
        )

    def _write_config(self, spec: SandboxSpec) -> None:
        """The server's configuration and kernel spec, root's and read-only in the sandbox:
        code in the sandbox cannot add a kernel that bypasses the record."""
        folder = spec.stage / "jupyter"
        folder.mkdir(mode=0o755, exist_ok=True)
        write_kernel_spec(folder, spec.python)
        config = server_config()
        config.setdefault("MappingKernelManager", {}).update(
            cull_idle_timeout=self.idle_timeout, cull_interval=60, cull_connected=True
        )
        server = config.setdefault("ServerApp", {})
        server["shutdown_no_activity_timeout"] = self.idle_timeout
        # Language servers and terminals run programs in the server's namespace, outside the
        # record: neither is loaded (and the server starts faster without them).
        server["jpserver_extensions"] = {"jupyter_lsp": False, "jupyter_server_terminals": False}
        (folder / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
        # jupyter_core writes this marker into its (here read-only) configuration folder
        # once it finds ~/.ipython, which the first session's kernel leaves in the workspace.
        (folder / "migrated").write_text("never: the sandbox's configuration is the platform's\n")
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _server_env(self, allowed: SessionGrant, spec: SandboxSpec) -> dict[str, str]:
        hub = {k: v for k, v in self.get_env().items() if k.startswith(PASSED)}
        return {
            **hub,
            "JUPYTER_CONFIG_DIR": CONFIG,
            "JUPYTER_PATH": CONFIG,
            "JUPYTER_DATA_DIR": "/tmp/jupyter/data",  # noqa: S108 - the sandbox's own /tmp
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",  # noqa: S108
            "SBX_RECORD_URL": f"{self.gateway_url.rstrip('/')}/api/v1/sandbox/executions",
            "SBX_RECORD_TOKEN": allowed.token,
            "SBX_SANDBOX_PYTHON": str(spec.python),
            "SBX_TMP_BYTES": str(spec.limits.tmp_bytes),
            "SBX_BWRAP": self.runtime().bwrap,
            "SBX_GRANT": allowed.grant,
        }

    async def _halt(self) -> None:
        """Stop the server and everything in its sandbox; unmount its stage."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            deadline = time.monotonic() + 5
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if process.poll() is None:
                process.kill()
        if self.spec is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, self.runtime().release, self.spec
            )

    async def _end(self, reason: str) -> None:
        session, self.session = self.session, None
        if session:
            try:
                await self._gateway().end_session(session, reason)
            except GatewayRefused as exc:
                self.log.warning("the gateway did not record the end of %s: %s", session, exc)
