"""Kernels of Docker sandboxes: the hub starts them for the sandbox's trusted server.

Under the Docker runtime every kernel is a container of its own: no network at all, the
grant's views and the workspace, and of the sockets volume only its own folder
(:meth:`sandbox.runtime.docker.DockerRuntime.launch` with ``kernel=``). Only the hub holds
the Docker engine, so the server's kernel provisioner asks the hub, over these routes
(``/hub/`` prefixed), with its session's token as a bearer token — the token its
recorder presents to the gateway, which no kernel ever sees:

=========================================  ===========================================
``POST /sbx-kernels``                      start ``{"kernel", "cwd", "session_name"}``
``GET /sbx-kernels/<id>``                  ``{"kernel": id, "exit_code": null | int}``
``POST /sbx-kernels/<id>/signal``          send ``{"signal": n}`` to the kernel
``DELETE /sbx-kernels/<id>``               stop it and remove its container
=========================================  ===========================================

The spawner registers a :class:`KernelLauncher` under its session's token when its server
starts and withdraws it when the server stops, so a token opens exactly one sandbox and
only while it runs. Before each start the launcher asks the gateway whether the session
may go on, so a suspended grant gets no new kernel even between two polls; the kernel
command, its image and its mounts are the hub's, never the caller's.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tornado import web

from sandbox.kernel.provisioner import kernel_command
from sandbox.runtime.bwrap import Profile
from sandbox.runtime.docker import DockerProcess, DockerRuntime
from sandbox.runtime.spec import HOME, KERNEL_ID, SandboxError, SandboxSpec

MAX_KERNELS = 8  # running kernels per sandbox: each is a container with the full limits
MAX_BODY = 4096
SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGQUIT})
T = TypeVar("T")

Check = Callable[[], Awaitable[tuple[bool, str | None]]]


class KernelRefused(Exception):
    """The kernel cannot be started or reached; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class KernelLauncher:
    """Starts, watches and stops the kernel containers of one running sandbox."""

    def __init__(
        self, runtime: DockerRuntime, spec: SandboxSpec, python: Path, check: Check
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self.python = python
        self.check = check
        self._lock = asyncio.Lock()

    async def start(self, kernel: str, cwd: str, session_name: str) -> None:
        if not KERNEL_ID.match(kernel):
            raise KernelRefused(400, "the kernel id is not a plain name")
        active, reason = await self.check()
        if not active:
            raise KernelRefused(403, f"the session may not go on: {reason or 'stopped'}")
        env = {"JPY_SESSION_NAME": session_name} if session_name else {}
        async with self._lock:  # two starts at once cannot both pass the count
            kernels = await _blocking(self.runtime.kernels, self.spec)
            if kernel in kernels:
                raise KernelRefused(409, f"kernel {kernel} exists already")
            running = [k for k in kernels.values() if k.poll() is None]
            if len(running) >= MAX_KERNELS:
                raise KernelRefused(
                    429, f"a sandbox runs at most {MAX_KERNELS} kernels: shut one down first"
                )
            await _blocking(
                functools.partial(
                    self.runtime.launch,
                    self.spec,
                    kernel_command(self.python),
                    profile=Profile.KERNEL,
                    env=env,
                    kernel=kernel,
                    workdir=cwd or HOME,
                )
            )

    async def status(self, kernel: str) -> int | None:
        return await _blocking(lambda: self._find(kernel).poll())

    async def signal(self, kernel: str, signum: int) -> None:
        if signum not in SIGNALS:
            raise KernelRefused(400, f"signal {signum} is not one a kernel is sent")
        await _blocking(lambda: self._find(kernel).send_signal(signum))

    async def remove(self, kernel: str) -> None:
        found = (await _blocking(self.runtime.kernels, self.spec)).get(kernel)
        if found is not None:
            await _blocking(self.runtime.remove, found)

    def _find(self, kernel: str) -> DockerProcess:
        found = self.runtime.kernels(self.spec).get(kernel)
        if found is None:
            raise KernelRefused(404, f"no kernel {kernel[:64]!r} in this sandbox")
        return found


async def _blocking(call: Callable[..., T], *args: Any) -> T:
    """Run a call to the engine off the hub's event loop; engine errors become 503s."""
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)
    except SandboxError as exc:
        raise KernelRefused(503, str(exc)) from None


class Launchers:
    """The running sandboxes' launchers, by the SHA-256 of their session's token."""

    def __init__(self) -> None:
        self._by_token: dict[str, KernelLauncher] = {}
        self._lock = threading.Lock()

    def register(self, token: str, launcher: KernelLauncher) -> None:
        with self._lock:
            self._by_token[_digest(token)] = launcher

    def withdraw(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(_digest(token), None)

    def find(self, token: str) -> KernelLauncher | None:
        digest = _digest(token)
        with self._lock:
            for known, launcher in self._by_token.items():
                if hmac.compare_digest(known, digest):
                    return launcher
        return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


LAUNCHERS = Launchers()


class KernelsHandler(web.RequestHandler):
    """The routes above. No cookies are read: only a session's bearer token counts."""

    def check_xsrf_cookie(self) -> None:
        """Bearer tokens only: there is no cookie to forge a request with."""

    refusal = ""  # why the request is refused, for the answer's body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"status": status_code, "reason": self.refusal or "refused"})

    def _launcher(self) -> KernelLauncher:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        launcher = LAUNCHERS.find(token.strip()) if scheme.lower() == "bearer" else None
        if launcher is None:
            self._fail(401, "a running sandbox's session token is needed")
        return launcher

    def _body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            self._fail(413, "the request is too large")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            self._fail(400, "the body is not JSON")
        if not isinstance(body, dict):
            self._fail(400, "the body is not a JSON object")
        return dict(body)

    def _fail(self, status: int, reason: str) -> NoReturn:
        self.refusal = reason
        raise web.HTTPError(status, reason)

    async def _run(self, action: Awaitable[T]) -> T:
        try:
            return await action
        except KernelRefused as exc:
            self._fail(exc.status, exc.reason)

    async def post(self, kernel: str | None = None, action: str | None = None) -> None:
        launcher = self._launcher()
        body = self._body()
        if kernel is None:
            kernel_id, cwd, name = (body.get(k, "") for k in ("kernel", "cwd", "session_name"))
            if not all(isinstance(v, str) for v in (kernel_id, cwd, name)) or len(name) > 256:
                self._fail(400, "kernel, cwd and session_name are strings")
            await self._run(launcher.start(kernel_id, cwd, name))
            self.set_status(201)
            self.finish({"kernel": kernel_id})
            return
        if action != "signal":
            self._fail(404, "no such route")
        signum = body.get("signal")
        if not isinstance(signum, int) or isinstance(signum, bool):
            self._fail(400, "signal is a number")
        await self._run(launcher.signal(kernel, signum))
        self.set_status(204)
        self.finish()

    async def get(self, kernel: str | None = None, action: str | None = None) -> None:
        launcher = self._launcher()
        if kernel is None or action is not None:
            self._fail(404, "no such route")
        code = await self._run(launcher.status(kernel))
        self.finish({"kernel": kernel, "exit_code": code})

    async def delete(self, kernel: str | None = None, action: str | None = None) -> None:
        launcher = self._launcher()
        if kernel is None or action is not None:
            self._fail(404, "no such route")
        await self._run(launcher.remove(kernel))
        self.set_status(204)
        self.finish()


ROUTES: list[tuple[str, type]] = [
    (r"/sbx-kernels", KernelsHandler),
    (r"/sbx-kernels/([A-Za-z0-9][A-Za-z0-9-]{0,63})", KernelsHandler),
    (r"/sbx-kernels/([A-Za-z0-9][A-Za-z0-9-]{0,63})/(signal)", KernelsHandler),
]
