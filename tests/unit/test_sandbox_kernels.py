"""Kernels of Docker sandboxes: the hub's launcher (against the engine twin), its routes
over real HTTP, and the server side's :class:`RemoteKernel` that calls them."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from sandbox.kernel.provisioner import kernel_command
from sandbox.kernel.remote import GONE, RemoteKernel
from sandbox.runtime.docker import DockerRuntime
from sandbox.runtime.spec import HOME, RUN, Limits, SandboxError, SandboxSpec
from sandbox.spawner.kernels import LAUNCHERS, MAX_KERNELS, ROUTES, KernelLauncher, KernelRefused
from tests.docker_twin import FakeDocker

TOKEN = "session-token-of-a-running-sandbox"  # noqa: S105 - a test value
PYTHON = Path("/opt/sbx-sandbox")


@dataclass
class Allowed:
    """The gateway's answer about the session, as the spawner's check gives it."""

    active: bool = True
    reason: str | None = None
    asked: int = 0

    async def __call__(self) -> tuple[bool, str | None]:
        self.asked += 1
        return self.active, self.reason


@pytest.fixture
def spec(tmp_path: Path) -> SandboxSpec:
    views = tmp_path / "views"
    views.mkdir()
    return SandboxSpec(
        name="u300001-abc",
        uid=300001,
        gid=310001,
        views=views,
        state=tmp_path / "state",
        stage=tmp_path / "stage",
        python=PYTHON,
        limits=Limits(),
        env={"SBX_GRANT": "g-1"},
    )


@pytest.fixture
def engine() -> FakeDocker:
    return FakeDocker()


@pytest.fixture
def allowed() -> Allowed:
    return Allowed()


@pytest.fixture
def launcher(engine: FakeDocker, spec: SandboxSpec, allowed: Allowed) -> KernelLauncher:
    runtime = DockerRuntime(client=engine, python=PYTHON)
    runtime.prepare(spec)
    return KernelLauncher(runtime, spec, PYTHON, allowed)


def kernels(engine: FakeDocker, spec: SandboxSpec) -> dict[str, Any]:
    return {
        r.labels["sbx.kernel"]: r
        for r in engine.sandbox_containers(spec.name)
        if r.labels.get("sbx.profile") == "kernel"
    }


# ---------------------------------------------------------------------------------------
# The launcher


def test_a_kernel_is_a_container_of_the_hubs_own_command(
    launcher: KernelLauncher, engine: FakeDocker, spec: SandboxSpec, allowed: Allowed
) -> None:
    asyncio.run(launcher.start("k-1", f"{HOME}/work", "analysis.ipynb"))
    [record] = kernels(engine, spec).values()
    assert record.command == kernel_command(PYTHON)
    assert record.command[-1] == f"{RUN}/connection.json"
    assert record.host_config["NetworkMode"] == "none"
    assert record.request["environment"]["JPY_SESSION_NAME"] == "analysis.ipynb"
    assert record.request["environment"]["SBX_GRANT"] == "g-1"
    assert record.request["working_dir"] == f"{HOME}/work"
    [run] = [m for m in record.host_config["Mounts"] if m["Target"] == RUN]
    assert run["VolumeOptions"]["Subpath"] == "kernels/k-1"
    assert allowed.asked == 1
    assert asyncio.run(launcher.status("k-1")) is None


def test_no_kernel_starts_once_the_session_may_not_go_on(
    launcher: KernelLauncher, engine: FakeDocker, spec: SandboxSpec, allowed: Allowed
) -> None:
    allowed.active, allowed.reason = False, "the grant is suspended"
    with pytest.raises(KernelRefused) as refused:
        asyncio.run(launcher.start("k-1", HOME, ""))
    assert refused.value.status == 403
    assert "suspended" in refused.value.reason
    assert kernels(engine, spec) == {}


def test_a_sandbox_runs_a_bounded_number_of_kernels(
    launcher: KernelLauncher, engine: FakeDocker, spec: SandboxSpec
) -> None:
    for number in range(MAX_KERNELS):
        asyncio.run(launcher.start(f"k-{number}", HOME, ""))
    with pytest.raises(KernelRefused) as refused:
        asyncio.run(launcher.start("one-more", HOME, ""))
    assert refused.value.status == 429
    with pytest.raises(KernelRefused) as again:
        asyncio.run(launcher.start("k-0", HOME, ""))
    assert again.value.status == 409
    engine.exit(kernels(engine, spec)["k-0"], 0)  # an ended kernel no longer counts
    asyncio.run(launcher.start("one-more", HOME, ""))
    assert len(kernels(engine, spec)) == MAX_KERNELS + 1


@pytest.mark.parametrize(
    ("kernel", "cwd", "status"),
    [("../k", HOME, 400), ("k/1", HOME, 400), ("k-1", "/etc", 503), ("k-1", f"{HOME}/..", 503)],
)
def test_a_kernel_is_a_plain_name_working_in_the_workspace(
    launcher: KernelLauncher,
    engine: FakeDocker,
    spec: SandboxSpec,
    kernel: str,
    cwd: str,
    status: int,
) -> None:
    with pytest.raises(KernelRefused) as refused:
        asyncio.run(launcher.start(kernel, cwd, ""))
    assert refused.value.status == status
    assert kernels(engine, spec) == {}


def test_signals_status_and_removal(
    launcher: KernelLauncher, engine: FakeDocker, spec: SandboxSpec
) -> None:
    asyncio.run(launcher.start("k-1", HOME, ""))
    with pytest.raises(KernelRefused) as refused:
        asyncio.run(launcher.signal("k-1", int(signal.SIGSTOP)))
    assert refused.value.status == 400
    asyncio.run(launcher.signal("k-1", int(signal.SIGKILL)))
    assert asyncio.run(launcher.status("k-1")) == 128 + signal.SIGKILL
    asyncio.run(launcher.remove("k-1"))
    asyncio.run(launcher.remove("k-1"))  # again: nothing happens
    with pytest.raises(KernelRefused) as gone:
        asyncio.run(launcher.status("k-1"))
    assert gone.value.status == 404


# ---------------------------------------------------------------------------------------
# The routes, over HTTP, and the server side's client


@pytest.fixture
def routes(launcher: KernelLauncher) -> Iterator[str]:
    """The hub's kernel routes on a port of their own; the launcher registered under
    :data:`TOKEN` as a spawner registers it."""
    socket, port = bind_unused_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = HTTPServer(web.Application([(f"/hub{p}", h) for p, h in ROUTES]))
        server.add_sockets([socket])
        loop.call_soon(ready.set)
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    LAUNCHERS.register(TOKEN, launcher)
    try:
        yield f"http://127.0.0.1:{port}/hub/sbx-kernels"
    finally:
        LAUNCHERS.withdraw(TOKEN)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def call(url: str, method: str, body: bytes | None, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"null")
        except ValueError:  # a path no route matches: the web server's own page
            return error.code, {"page": raw.decode(errors="replace")}


def test_the_server_starts_watches_and_removes_its_kernel_through_the_hub(
    routes: str, engine: FakeDocker, spec: SandboxSpec
) -> None:
    kernel = RemoteKernel.start(routes, TOKEN, "k-1", HOME, "nb.ipynb")
    assert set(kernels(engine, spec)) == {"k-1"}
    assert kernel.poll() is None
    kernel.kill()
    assert kernel.wait(timeout=5) == 128 + signal.SIGKILL
    kernel.remove()
    assert kernels(engine, spec) == {}


def test_a_kernel_whose_container_is_gone_has_ended(
    routes: str, engine: FakeDocker, spec: SandboxSpec
) -> None:
    kernel = RemoteKernel.start(routes, TOKEN, "k-1", HOME, "")
    del engine.records[kernels(engine, spec)["k-1"].id]  # removed behind the hub's back
    assert kernel.poll() == GONE
    kernel.terminate()  # ended already: nothing is sent


def test_a_withdrawn_session_ends_its_kernels_view_and_starts_nothing(
    routes: str, engine: FakeDocker, spec: SandboxSpec
) -> None:
    kernel = RemoteKernel.start(routes, TOKEN, "k-1", HOME, "")
    LAUNCHERS.withdraw(TOKEN)  # the server is stopping
    assert kernel.poll() == GONE
    with pytest.raises(SandboxError, match="401: a running sandbox's session token"):
        RemoteKernel.start(routes, TOKEN, "k-2", HOME, "")
    assert set(kernels(engine, spec)) == {"k-1"}


@pytest.mark.parametrize(
    ("path", "method", "body", "token", "status"),
    [
        ("", "POST", b'{"kernel": "k-1"}', None, 401),
        ("", "POST", b'{"kernel": "k-1"}', "another-token", 401),
        ("", "POST", b"not json", TOKEN, 400),
        ("", "POST", b'["k-1"]', TOKEN, 400),
        ("", "POST", b'{"kernel": 7}', TOKEN, 400),
        ("", "POST", b'{"kernel": "k-1", "pad": "' + b"x" * 5000 + b'"}', TOKEN, 413),
        ("/k-1", "GET", None, TOKEN, 404),
        ("/k-1/signal", "POST", b'{"signal": "KILL"}', TOKEN, 400),
        ("/k-1/signal", "POST", b'{"signal": true}', TOKEN, 400),
        ("/k-1/other", "POST", b"{}", TOKEN, 404),
        ("/..%2Fserver", "GET", None, TOKEN, 404),
    ],
)
def test_the_routes_answer_bad_requests_with_a_reason(
    routes: str,
    engine: FakeDocker,
    spec: SandboxSpec,
    path: str,
    method: str,
    body: bytes | None,
    token: str | None,
    status: int,
) -> None:
    code, answer = call(routes + path, method, body, token)
    assert code == status, answer
    if status != 404 or path == "/k-1":
        assert answer["reason"] and answer["reason"] != "refused"
    assert kernels(engine, spec) == {}


def test_a_hub_that_cannot_answer_neither_starts_nor_ends_a_kernel() -> None:
    closed = "http://127.0.0.1:9/hub/sbx-kernels"  # the discard port: nothing listens
    with pytest.raises(SandboxError, match="unreachable"):
        RemoteKernel.start(closed, TOKEN, "k-1", HOME, "")
    kernel = RemoteKernel(closed, TOKEN, "k-1", timeout=2)
    assert kernel.poll() is None  # taken to run on, not restarted
    assert kernel.returncode is None
