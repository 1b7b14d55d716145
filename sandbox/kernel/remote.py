"""A kernel the hub runs for the server (the Docker runtime), seen as a process.

:class:`RemoteKernel` speaks to the hub's kernel routes (:mod:`sandbox.spawner.kernels`)
with the session's token and offers what :class:`~jupyter_client.provisioning.
LocalProvisioner` uses of a :class:`subprocess.Popen`: :meth:`poll`, :meth:`wait`,
:meth:`send_signal`, :meth:`terminate`, :meth:`kill` (and no pipes). :meth:`remove` asks
the hub to remove the kernel's container once the kernel is done with.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Mapping

from sandbox.kernel.record import MAX_ANSWER_BYTES, BearerClient, error_field
from sandbox.runtime.spec import SandboxError

GONE = -int(signal.SIGKILL)  # the exit status of a kernel whose container is gone


class RemoteKernel:
    """One kernel container, started and watched through the hub."""

    stdin = stdout = stderr = None  # what Popen's users close: a container has no pipes
    pid = None

    def __init__(self, launcher: str, token: str, kernel: str, timeout: float = 30) -> None:
        self.launcher = launcher.rstrip("/")
        self.kernel = kernel
        self.args = [f"{self.launcher}/{kernel}"]
        self.returncode: int | None = None
        self._client = BearerClient(token, timeout)
        self._url = f"{self.launcher}/{urllib.parse.quote(kernel, safe='')}"

    def __repr__(self) -> str:
        return f"RemoteKernel({self.kernel!r})"

    @classmethod
    def start(
        cls, launcher: str, token: str, kernel: str, cwd: str, session_name: str
    ) -> RemoteKernel:
        """Ask the hub to start the kernel; :class:`SandboxError` with its reason if not."""
        remote = cls(launcher, token, kernel)
        body = {"kernel": kernel, "cwd": cwd, "session_name": session_name}
        remote._call("POST", remote.launcher, body, "start the kernel")
        return remote

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                answer = json.loads(self._call("GET", self._url, None, "watch the kernel"))
            except _Gone:
                self.returncode = GONE
            except SandboxError:
                # The hub cannot answer just now: the kernel is taken to run on (as the
                # spawner does with the engine) rather than restarted or its work lost.
                return None
            else:
                code = answer.get("exit_code")
                self.returncode = None if code is None else int(code)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.2)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        try:
            self._call("POST", f"{self._url}/signal", {"signal": int(sig)}, "signal the kernel")
        except _Gone:
            self.returncode = GONE

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def remove(self) -> None:
        """Remove the kernel's container (stopping it first); idempotent."""
        try:
            self._call("DELETE", self._url, None, "remove the kernel")
        except _Gone:
            pass
        if self.returncode is None:
            self.returncode = GONE

    def _call(self, method: str, url: str, body: Mapping[str, object] | None, what: str) -> bytes:
        try:
            return self._client.call(method, url, body)[1]
        except urllib.error.HTTPError as error:
            reason = error_field(error.read(MAX_ANSWER_BYTES), "reason") or "refused"
            error.close()
            if error.code in (401, 404) and url != self.launcher:
                # the kernel's container, or the whole sandbox (its token withdrawn), is gone
                raise _Gone from None
            raise SandboxError(f"the hub would not {what} ({error.code}: {reason})") from None
        except (urllib.error.URLError, OSError) as error:
            cause = getattr(error, "reason", error)
            raise SandboxError(f"the hub is unreachable, so it cannot {what} ({cause})") from None


class _Gone(Exception):
    pass
