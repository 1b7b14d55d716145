"""``SandboxSpawner``: JupyterHub starts each applicant's server for one grant in a sandbox.

Override contract (JupyterHub's :class:`~jupyterhub.spawner.Spawner`): :meth:`start`
returns the server's address once its process runs; :meth:`poll` returns ``None`` while
it runs and an exit status once it has ended; :meth:`stop` is idempotent; the state that
outlives a hub restart is :meth:`get_state`'s.

Every sandbox is a named server whose name is the grant: ``/user/<user>/<grant>/``. On
start the spawner asks the gateway for a session (the gateway refuses unless the user is
an active member of an active grant, and records the start), prepares the sandbox with the
configured ``runtime`` and starts ``jupyterhub-singleuser`` where the sandbox can read but
not change the server's configuration:

- ``bwrap`` (the embedded default): the server runs in the server namespace on this host,
  with the configuration the spawner writes bound at ``/etc/sbx/jupyter``; kernels start
  in namespaces of their own, from the server, with bubblewrap.
- ``docker``: the server is a container of the sandbox image (whose ``/etc/sbx/jupyter``
  was written when it was built) on the sandbox's network and the hub's; kernels are
  containers without a network that the hub starts when the server asks
  (:mod:`sandbox.spawner.kernels`).

Either way kernels start through the ``sbx-sandbox`` provisioner, which records every
execution with the gateway before the kernel sees it.

While the server runs, :meth:`poll` asks the gateway every ``check_interval`` seconds
whether the session is still allowed: a suspended or expired grant stops its servers at
the next check (the gateway also asks the hub to stop them at once). Idle kernels are
culled and an idle server shuts itself down after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Enum, Float, Integer, Unicode, default

from sandbox.kernel.kernelspec import CONFIG_DIR, server_arguments, write_server_config
from sandbox.runtime.bwrap import Binding, BubblewrapRuntime, Profile
from sandbox.runtime.docker import DockerProcess, DockerRuntime
from sandbox.runtime.spec import Limits, SandboxError, SandboxSpec, sandbox_name
from sandbox.spawner.gateway import GatewayClient, GatewayRefused, SessionGrant
from sandbox.spawner.kernels import LAUNCHERS, KernelLauncher

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
    runtime = Enum(
        ["bwrap", "docker"],
        "bwrap",
        config=True,
        help="Where sandboxes run: bubblewrap namespaces on this host, or Docker containers.",
    )
    bwrap = Unicode("", help="Path of bubblewrap (default: found on PATH).").tag(config=True)
    docker_image = Unicode("sbx-sandbox:latest", help="The sandbox image (runtime docker).").tag(
        config=True
    )
    docker_network = Unicode(
        "sbx-hub", help="The hub's Docker network, which sandbox servers join (runtime docker)."
    ).tag(config=True)
    docker_port = Integer(
        8888, help="The port a sandbox server listens on in its container (runtime docker)."
    ).tag(config=True)
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
        self._runtime: BubblewrapRuntime | DockerRuntime | None = None
        self._token: str | None = None  # the session's, while its kernels may be started

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
            runtime = self.isolation()
            await asyncio.get_running_loop().run_in_executor(None, runtime.prepare, spec)
            if isinstance(runtime, DockerRuntime):
                await self._start_container(runtime, allowed, spec)
            else:
                await self._start_namespace(runtime, allowed, spec)
        except (SandboxError, OSError) as exc:
            self.log.error("sandbox of %s/%s could not start: %s", self.user.name, self.name, exc)
            await self._halt()
            await self._end("the sandbox could not start")
            raise web.HTTPError(503, f"the sandbox could not start: {exc}") from None
        self.log.info("sandbox %s started for %s on grant %s", spec.name, self.user.name, self.name)
        await self._listening()
        return (self.ip, self.port)

    async def _start_namespace(
        self, runtime: BubblewrapRuntime, allowed: SessionGrant, spec: SandboxSpec
    ) -> None:
        """The server in the server namespace, on a free port of this host."""
        await asyncio.get_running_loop().run_in_executor(None, self._write_config, spec)
        self._listen_at("127.0.0.1", random_port())
        env = self._server_env(allowed, spec)
        env["SBX_BWRAP"] = runtime.bwrap
        log = open(Path(self.state_dir) / f"{spec.name}.log", "ab")  # noqa: SIM115
        try:
            self.process = runtime.launch(
                spec,
                self._server_command(),
                profile=Profile.SERVER,
                env=env,
                extra=[Binding(spec.stage / "jupyter", CONFIG_DIR)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    async def _start_container(
        self, runtime: DockerRuntime, allowed: SessionGrant, spec: SandboxSpec
    ) -> None:
        """The server in a container of the sandbox image, listening on all of its
        addresses; the hub reaches it at its address on the hub's network."""
        self._listen_at("0.0.0.0", self.docker_port)  # noqa: S104 - the container's own
        env = self._server_env(allowed, spec)
        api = self.hub.api_url.rstrip("/")
        env["SBX_KERNEL_LAUNCHER"] = f"{api.removesuffix('/api')}/sbx-kernels"
        launcher = KernelLauncher(runtime, spec, Path(self.python), self._session_allowed)
        LAUNCHERS.register(allowed.token, launcher)
        self._token = allowed.token
        loop = asyncio.get_running_loop()
        launch = functools.partial(
            runtime.launch, spec, self._server_command(), profile=Profile.SERVER, env=env
        )
        process: DockerProcess = await loop.run_in_executor(None, launch)
        self.process = process
        self.ip = await loop.run_in_executor(None, process.address)

    def _listen_at(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        if self.server is not None:
            self.server.ip, self.server.port = ip, port

    def _server_command(self) -> list[str]:
        return [
            str(Path(self.python) / "bin" / "jupyterhub-singleuser"),
            *server_arguments(self.idle_timeout),
        ]

    async def _listening(self) -> None:
        """Return once the server accepts connections (or has ended): the hub then finds it
        up at its first check instead of after its back-off."""
        deadline = time.monotonic() + self.start_timeout
        loop = asyncio.get_running_loop()
        while time.monotonic() < deadline and self.process is not None:
            if await loop.run_in_executor(None, self.process.poll) is not None:
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
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, self.process.poll)
        except SandboxError as exc:  # the engine is unreachable: keep what runs
            self.log.warning("cannot watch sandbox of %s/%s: %s", self.user.name, self.name, exc)
            return None
        if status is not None:
            # The server ended on its own (idle shutdown, a crash): the hub may not call
            # stop(), so leave nothing behind here.
            await self._halt()
            await self._end(f"the server ended with status {status}")
            return int(status)
        if self.session and time.monotonic() - self._checked >= self.check_interval:
            self._checked = time.monotonic()
            active, reason = await self._session_allowed()
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
    def isolation(self) -> BubblewrapRuntime | DockerRuntime:
        """The configured runtime."""
        if self._runtime is None:
            if self.runtime == "docker":
                self._runtime = DockerRuntime(
                    image=self.docker_image, hub_network=self.docker_network, python=self.python
                )
            else:
                self._runtime = BubblewrapRuntime(self.bwrap or None)
        return self._runtime

    async def _session_allowed(self) -> tuple[bool, str | None]:
        """Whether the gateway lets the session go on (yes while it cannot be reached)."""
        if not self.session:
            return False, "the session has ended"
        try:
            return await self._gateway().session_state(self.session)
        except GatewayRefused as exc:
            return exc.status >= 500, str(exc)

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
        write_server_config(spec.stage / "jupyter", spec.python)

    def _server_env(self, allowed: SessionGrant, spec: SandboxSpec) -> dict[str, str]:
        hub = {k: v for k, v in self.get_env().items() if k.startswith(PASSED)}
        return {
            **hub,
            "JUPYTER_CONFIG_DIR": CONFIG_DIR,
            "JUPYTER_PATH": CONFIG_DIR,
            "JUPYTER_DATA_DIR": "/tmp/jupyter/data",  # noqa: S108 - the sandbox's own /tmp
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",  # noqa: S108
            "SBX_RECORD_URL": f"{self.gateway_url.rstrip('/')}/api/v1/sandbox/executions",
            "SBX_RECORD_TOKEN": allowed.token,
            "SBX_SANDBOX_PYTHON": str(spec.python),
            "SBX_TMP_BYTES": str(spec.limits.tmp_bytes),
            "SBX_GRANT": allowed.grant,
        }

    async def _halt(self) -> None:
        """Stop the server and everything in its sandbox; unmount its stage."""
        token, self._token = self._token, None
        if token is not None:
            LAUNCHERS.withdraw(token)  # no kernel starts any more
        process, self.process = self.process, None
        loop = asyncio.get_running_loop()
        try:
            if process is not None and await loop.run_in_executor(None, process.poll) is None:
                await loop.run_in_executor(None, process.terminate)
                deadline = time.monotonic() + 5
                while await loop.run_in_executor(None, process.poll) is None:
                    if time.monotonic() >= deadline:
                        await loop.run_in_executor(None, process.kill)
                        break
                    await asyncio.sleep(0.1)
        except SandboxError as exc:  # the engine: release below removes what it can
            self.log.warning("stopping sandbox of %s/%s: %s", self.user.name, self.name, exc)
        if self.spec is not None:
            try:
                await loop.run_in_executor(None, self.isolation().release, self.spec)
            except SandboxError as exc:
                self.log.error("sandbox %s was not released: %s", self.spec.name, exc)

    async def _end(self, reason: str) -> None:
        session, self.session = self.session, None
        if session:
            try:
                await self._gateway().end_session(session, reason)
            except GatewayRefused as exc:
                self.log.warning("the gateway did not record the end of %s: %s", session, exc)
