"""The Docker runtime end to end: the real hub, spawner and gateway, the real Docker SDK,
and the suite's engine (:mod:`tests.docker_engine`), which runs each container under
bubblewrap since no Docker engine runs here.

The hub starts the server as a container on the hub's network and the sandbox's own; the
server's provisioner asks the hub for each kernel, which the hub starts as a container
with no network that sees only its own folder of the sockets; every cell is recorded by
the server's proxy before it runs; stopping the server removes every container, the
sandbox's network and its sockets, and keeps the workspace.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest

from bench.spawn import Hub, execute, free_port, sbx, start_gateway
from gateway.cli.serve import hub_options
from gateway.settings import load_settings
from sandbox.spawner.hub import HubService, start_hub, stop_hub, wait_for_hub
from tests.docker_engine import Container, RunningEngine
from tests.integration.test_sandbox_hub import APPLICANT, GRANT, Platform, _detail
from tests.integration.test_serve import REPO_ROOT

SCOPES = ("servers", "access:servers", "admin:users", "read:users")
PYTHON = REPO_ROOT / ".venv-sandbox"
PROBE = """
import json, os, socket
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "sockets": sorted(os.listdir("/run/sbx")) if os.path.isdir("/run/sbx") else [],
    "views": sorted(os.listdir("/data")),
}))
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


@dataclass
class DockerPlatform:
    platform: Platform
    engine: RunningEngine
    hub: Hub
    network: str
    env: dict[str, str]

    def sbx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-c", "from gateway.cli import main; main()", *args],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def containers(self) -> list[Container]:
        return [
            c
            for c in self.engine.engine.containers.values()
            if c.labels.get("sbx.sandbox", "").startswith("u")
        ]

    def run(self, *cells: str) -> list[str]:
        async def go() -> list[str]:
            await self.hub.call("POST", f"/users/{APPLICANT}", {}, fine=(409,))
            server = await self.hub.start(APPLICANT, GRANT)
            socket = await self.hub.open_kernel(server)
            try:
                return [await execute(socket, cell) for cell in cells]
            finally:
                socket.close()

        return asyncio.run(go())

    def stop(self) -> None:
        asyncio.run(self.hub.close(APPLICANT, GRANT))


@pytest.fixture(scope="module")
def docker_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerPlatform]:
    root = tmp_path_factory.mktemp("sandbox-docker")
    data = root / "var"
    stage = Path(tempfile.mkdtemp(prefix="sbx-stage-", dir="/tmp"))  # noqa: S108
    engine = RunningEngine(PYTHON)
    network = f"sbx-hub-{secrets.token_hex(3)}"
    gateway_port, hub_port, api_port = free_port(), free_port(), free_port()
    env = {
        "SBX_SANDBOX__HUB_URL": f"http://127.0.0.1:{hub_port}",
        "SBX_SANDBOX__HUB_API_URL": f"http://127.0.0.1:{api_port}/hub/api",
        "SBX_SANDBOX__STAGE_DIR": str(stage),
        "SBX_SANDBOX__POLL_SECONDS": "1",
        "SBX_SANDBOX__RUNTIME": "docker",
        "SBX_SANDBOX__DOCKER_NETWORK": network,
        "SBX_SANDBOX__UID_BASE": "260000",  # ids of their own on this host
        "SBX_SANDBOX__GID_BASE": "270000",
    }
    shell = {**os.environ, "SBX_DATA_DIR": str(data), **env, "DOCKER_HOST": engine.url}
    gateway = hub_process = None
    try:
        docker.DockerClient(base_url=engine.url).networks.create(network, internal=True)
        sbx(data, "demo", "--no-serve", env=env)
        accounts = {a["username"]: a for a in json.loads((data / "demo-accounts.json").read_text())}
        gateway = start_gateway(data, gateway_port, env)
        sandbox = {k.removeprefix("SBX_SANDBOX__").lower(): v for k, v in env.items()}
        settings = load_settings(data_dir=data, sandbox=sandbox)
        token = secrets.token_hex(32)
        options = replace(
            hub_options(settings, f"http://127.0.0.1:{gateway_port}"),
            services=(HubService("test", token, SCOPES),),
            docker_port=free_port(),  # the suite's engine shares the host's network
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DOCKER_HOST", engine.url)
            hub_process = start_hub(options)
        wait_for_hub(options, hub_process)
        platform = Platform(
            data,
            stage,
            f"http://127.0.0.1:{gateway_port}",
            options.public_url,
            options.api_url,
            accounts,
        )
        hub = Hub("docker", options.public_url.rstrip("/"), options.api_url, token, "sbx")
        yield DockerPlatform(platform, engine, hub, network, shell)
    finally:
        if hub_process is not None:
            stop_hub(hub_process)
        if gateway is not None:
            gateway.send_signal(signal.SIGINT)
            gateway.wait(30)
        engine.close()
        shutil.rmtree(stage, ignore_errors=True)
    log = (data / "hub" / "jupyterhub.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def _kernel_routes(platform: DockerPlatform, token: str | None) -> tuple[int, dict[str, Any]]:
    base = platform.hub.api.removesuffix("/api")
    request = urllib.request.Request(  # noqa: S310 - the local hub
        f"{base}/sbx-kernels",
        data=json.dumps({"kernel": "k1", "cwd": "", "session_name": ""}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_cells_run_in_a_kernel_container_without_a_network_and_are_recorded(
    docker_platform: DockerPlatform,
) -> None:
    [printed] = docker_platform.run(PROBE)
    seen = json.loads(printed)
    started = docker_platform.platform.ledger("sandbox.start")[-1]
    uid, gid = _detail(started)["uid"], _detail(started)["gid"]
    assert (seen["uid"], seen["gid"]) == (uid, gid)
    assert seen["interfaces"] == ["lo"]
    # Of the sockets volume the kernel sees its own folder only: no other kernel's, and
    # not the server's side of the recording proxy.
    assert "connection.json" in seen["sockets"]
    assert not {"kernels", "server"} & set(seen["sockets"])
    assert seen["views"], "the grant's views are at /data"

    containers = docker_platform.containers()
    server = [c for c in containers if c.labels["sbx.profile"] == "server"]
    kernels = [c for c in containers if c.labels["sbx.profile"] == "kernel"]
    assert len(server) == 1 and len(kernels) == 1, [c.labels for c in containers]
    name = server[0].labels["sbx.sandbox"]
    assert set(server[0].networks) == {docker_platform.network, f"sbx-{name}"}
    kernel = kernels[0]
    assert kernel.host["NetworkMode"] == "none"
    assert kernel.networks == {}
    assert kernel.config["User"] == server[0].config["User"] == f"{uid}:{gid}"
    assert kernel.host["CapDrop"] == ["ALL"]
    [run] = [m for m in kernel.host["Mounts"] if m["Target"] == "/run/sbx"]
    assert run["VolumeOptions"]["Subpath"] == f"kernels/{kernel.labels['sbx.kernel']}"

    recorded = [_detail(e) for e in docker_platform.platform.ledger("sandbox.execute")]
    assert any(d["code"] == PROBE and d["grant"] == GRANT for d in recorded)
    docker_platform.stop()


def test_the_kernel_routes_answer_only_a_running_sandbox(
    docker_platform: DockerPlatform,
) -> None:
    for token in (None, "not-a-session-token"):
        status, answer = _kernel_routes(docker_platform, token)
        assert status == 401, answer
        assert "session token" in answer["reason"]
    assert not [c for c in docker_platform.containers() if c.labels["sbx.profile"] == "kernel"]


def test_a_stopped_sandbox_leaves_its_workspace_and_nothing_else(
    docker_platform: DockerPlatform,
) -> None:
    note = secrets.token_hex(8)
    docker_platform.run(f"open('note.txt', 'w').write({note!r})")
    name = docker_platform.containers()[0].labels["sbx.sandbox"]
    docker_platform.stop()
    engine = docker_platform.engine.engine
    deadline = time.monotonic() + 15
    while docker_platform.containers():
        assert time.monotonic() < deadline, [c.name for c in docker_platform.containers()]
        time.sleep(0.1)
    assert f"sbx-ws-{name}" in engine.volumes
    assert f"sbx-run-{name}" not in engine.volumes
    assert all(n.name != f"sbx-{name}" for n in engine.networks.values())
    [printed] = docker_platform.run("print(open('note.txt').read())")
    assert printed.strip() == note
    docker_platform.stop()


def test_a_batch_command_runs_in_a_container_like_a_kernel(
    docker_platform: DockerPlatform,
) -> None:
    python = str(PYTHON / "bin" / "python")
    code = PROBE + "\nimport sys; sys.exit(3)"
    done = docker_platform.sbx(
        "sandbox", "run", "--grant", GRANT, "--user", APPLICANT, "--", python, "-c", code
    )
    assert done.returncode == 3, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["interfaces"] == ["lo"]
    assert seen["sockets"] == []  # a batch command sees no sockets at all
    assert seen["views"]
    commands = [_detail(e) for e in docker_platform.platform.ledger("sandbox.execute")]
    assert any(d["kind"] == "command" and code in d["code"] for d in commands)
    assert not [c for c in docker_platform.engine.engine.containers.values()]
