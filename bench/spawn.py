"""Sandboxes: time from "open sandbox" to a kernel that has executed its first cell, and
twenty sandboxes at once.

Two real hubs in one run, on fresh data from ``sbx demo``:

- **sandboxed**: the platform's own hub (:mod:`sandbox.spawner`) beside a real gateway:
  each spawn asks the gateway for a session, prepares the sandbox (stage, cgroups,
  workspace image), starts the server in its namespace, and the first cell's kernel in
  the kernel namespace behind the recording proxy (the cell is in the ledger before it
  runs);
- **baseline**: a plain JupyterHub with its local-process spawner
  (``SimpleLocalProcessSpawner``: LocalProcessSpawner without the switch to a system user,
  which the machine has none of), the same ``jupyterhub-singleuser`` and the same kernel
  environment, no isolation and no record.

One spawn = ask the hub to start the server → the hub reports it ready → start a kernel
over the server's REST API → execute ``1 + 1`` over its websocket → the reply. The server
is stopped (and waited for) between spawns, so every spawn is a cold start of the server.
The concurrent part starts twenty sandboxes (twenty grants of the demo applicant) at once,
then has each execute ten cells at once, and reports start and cell latencies and the
sandboxes' memory.
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
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from bench.common import VAR, Results, Table, console, human_bytes, percentile
from sandbox.spawner.hub import PROXY, HubService, start_hub, stop_hub, wait_for_hub

REPO = Path(__file__).resolve().parent.parent
SANDBOX_ENV = REPO / ".venv-sandbox"
APPLICANT = "applicant.wang"
GRANT = "demo-grant"
SCOPES = ("servers", "access:servers", "admin:users", "read:users")


@dataclass
class Hub:
    name: str
    public: str
    api: str
    token: str
    kernel: str

    async def call(
        self, method: str, path: str, body: Any = None, *, fine: tuple[int, ...] = (404,)
    ) -> Any:
        request = HTTPRequest(
            self.api + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=120,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code >= 400 and response.code not in fine:
            raise RuntimeError(f"{self.name}: {method} {path} → {response.code} {response.body!r}")
        return json.loads(response.body) if response.body else None

    async def server(self, user: str, name: str) -> dict[str, Any] | None:
        found = await self.call("GET", f"/users/{quote(user)}")
        servers: dict[str, Any] = (found or {}).get("servers", {})
        return servers.get(name)

    async def open_and_run(self, user: str, name: str, cells: int = 1) -> tuple[float, list[float]]:
        """Seconds until the first cell's reply, and every cell's own latency."""
        started = time.perf_counter()
        server = await self.start(user, name)
        socket = await self.open_kernel(server)
        latencies = []
        first = 0.0
        try:
            for number in range(cells):
                cell = time.perf_counter()
                await execute(socket, f"{number} + 1")
                latencies.append(time.perf_counter() - cell)
                if number == 0:
                    first = time.perf_counter() - started
        finally:
            socket.close()
        return first, latencies

    async def start(self, user: str, name: str) -> dict[str, Any]:
        """Ask the hub to start the server and return it once the hub reports it ready."""
        await self.call("POST", f"/users/{quote(user)}/servers/{quote(name)}", {})
        while True:
            server = await self.server(user, name)
            if server and server.get("ready"):
                return server
            if server is None or server.get("pending") not in ("spawn", None):
                raise RuntimeError(f"{self.name}: {user}/{name} did not start: {server}")
            await asyncio.sleep(0.02)

    async def open_kernel(self, server: dict[str, Any]) -> Any:
        """A new kernel of the running ``server``: its websocket."""
        base = self.public + server["url"]
        kernel = await self._fetch_json("POST", base + "api/kernels", {"name": self.kernel})
        return await websocket_connect(
            HTTPRequest(
                base.replace("http", "ws", 1) + f"api/kernels/{kernel['id']}/channels",
                headers={"Authorization": f"token {self.token}"},
            )
        )

    async def close(self, user: str, name: str) -> None:
        await self.call("DELETE", f"/users/{quote(user)}/servers/{quote(name)}")
        while await self.server(user, name) is not None:
            await asyncio.sleep(0.05)

    async def _fetch_json(self, method: str, url: str, body: Any) -> Any:
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=json.dumps(body),
            request_timeout=120,
        )
        response = await AsyncHTTPClient().fetch(request)
        return json.loads(response.body)


async def execute(socket: Any, code: str) -> str:
    """Run ``code`` in the kernel behind ``socket``; what it printed."""
    message = secrets.token_hex(16)
    printed: list[str] = []
    replied = idle = False
    await socket.write_message(
        json.dumps(
            {
                "channel": "shell",
                "header": {
                    "msg_id": message,
                    "msg_type": "execute_request",
                    "username": "bench",
                    "session": message,
                    "date": "",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                },
                "buffers": [],
            }
        )
    )
    while True:
        raw = await asyncio.wait_for(socket.read_message(), 120)
        if raw is None:
            raise RuntimeError("the kernel's websocket closed")
        reply = json.loads(raw)
        if reply["parent_header"].get("msg_id") != message:
            continue
        kind = reply["msg_type"]
        if kind == "stream":
            printed.append(reply["content"]["text"])
        elif kind == "execute_reply":
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"cell failed: {reply['content']}")
            replied = True
        elif kind == "status" and reply["content"]["execution_state"] == "idle":
            idle = True  # every output of the cell has come
        if replied and idle:
            return "".join(printed)


def sbx(data: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-c", "from gateway.cli import main; main()", *args],
        cwd=REPO,
        env={**os.environ, "SBX_DATA_DIR": str(data), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sbx {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done


def start_gateway(data: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``sbx serve --no-hub`` on ``port``, quiet (its logs are not read), once it answers:
    a hub started earlier would refuse its first spawns."""
    gateway = subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "serve",
            "--no-hub",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env={**os.environ, "SBX_DATA_DIR": str(data), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {gateway.returncode}")
        try:
            health = f"http://127.0.0.1:{port}/api/v1/health"
            with urllib.request.urlopen(health, timeout=2):  # noqa: S310 - our own
                return gateway
        except OSError:
            if time.monotonic() > deadline:
                gateway.kill()
                raise RuntimeError("the gateway did not answer within 60 s") from None
            time.sleep(0.1)


def free_port() -> int:
    import socket

    while True:
        with socket.socket() as one, socket.socket() as two:
            one.bind(("127.0.0.1", 0))
            port = int(one.getsockname()[1])
            try:
                two.bind(("127.0.0.1", port + 1))  # the hub's proxy API takes the next one
            except OSError:
                continue
            return port


@contextmanager
def platform(concurrent: int, root: Path) -> Iterator[tuple[Hub, Hub, Path]]:
    """The gateway, the sandboxed hub and the baseline hub, on fresh demo data in ``root``."""
    data = root / "var"
    stage = Path(tempfile.mkdtemp(prefix="sbx-bench-stage-", dir="/tmp"))  # noqa: S108
    os.chmod(stage, 0o711)  # noqa: S103 - traversable, not listable
    gateway_port, hub_port, api_port = free_port(), free_port(), free_port()
    env = {
        "SBX_SANDBOX__HUB_URL": f"http://127.0.0.1:{hub_port}",
        "SBX_SANDBOX__HUB_API_URL": f"http://127.0.0.1:{api_port}/hub/api",
        "SBX_SANDBOX__STAGE_DIR": str(stage),
        "SBX_SANDBOX__MEMORY_MIB": "1024",
        # Ids of their own, so that the benchmark's sandboxes (and control groups) are never
        # those of a platform running on the same host.
        "SBX_SANDBOX__UID_BASE": "240000",
        "SBX_SANDBOX__GID_BASE": "250000",
    }
    console.print("setting up: sbx demo --no-serve, then the grants of the concurrent run")
    sbx(data, "demo", "--no-serve", env=env)
    demo = json.loads(sbx(data, "grant", "list", "--json", env=env).stdout)[0]
    grants = [f"bench-{n:02d}" for n in range(1, concurrent + 1)]
    for grant in grants:
        shutil.copytree(data / "views" / GRANT, data / "views" / grant)
        sbx(
            data,
            "grant",
            "create",
            grant,
            "--title",
            "benchmark",
            "--organization",
            demo["organization_id"],
            "--member",
            APPLICANT,
            "--views",
            grant,
            env=env,
        )
    gateway = start_gateway(data, gateway_port, env)
    hubs: list[subprocess.Popen[bytes]] = []
    try:
        from gateway.cli.serve import hub_options
        from gateway.settings import load_settings

        settings = load_settings(data_dir=data, **_nested(env))
        token = secrets.token_hex(32)
        options = hub_options(settings, f"http://127.0.0.1:{gateway_port}")
        options = replace(options, services=(HubService("bench", token, SCOPES),))
        sandboxed = start_hub(options)
        hubs.append(sandboxed)
        wait_for_hub(options, sandboxed)
        plain_port, plain_api = free_port(), free_port()
        plain = baseline_hub(root / "plain", plain_port, plain_api, token)
        hubs.append(plain)
        wait_for_hub(replace(options, public_url=f"http://127.0.0.1:{plain_port}"), plain)
        yield (
            Hub("sandboxed", options.public_url.rstrip("/"), options.api_url, token, "sbx"),
            Hub(
                "baseline",
                f"http://127.0.0.1:{plain_port}",
                f"http://127.0.0.1:{plain_api}/hub/api",
                token,
                "python3",
            ),
            stage,
        )
    finally:
        for process in hubs:
            stop_hub(process)
        gateway.send_signal(signal.SIGINT)
        gateway.wait(30)
        shutil.rmtree(stage, ignore_errors=True)


def _nested(env: dict[str, str]) -> dict[str, Any]:
    sandbox = {k.removeprefix("SBX_SANDBOX__").lower(): v for k, v in env.items()}
    return {"sandbox": sandbox}


def baseline_hub(folder: Path, port: int, api: int, token: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    notebooks = folder / "notebooks"
    notebooks.mkdir(exist_ok=True)
    config = {
        "JupyterHub": {
            "bind_url": f"http://127.0.0.1:{port}/",
            "hub_bind_url": f"http://127.0.0.1:{api}/",
            "db_url": f"sqlite:///{folder / 'jupyterhub.sqlite'}",
            "cookie_secret_file": str(folder / "cookie_secret"),
            "spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
            "authenticator_class": "null",
            "allow_named_servers": True,
            "named_server_limit_per_user": 0,
            "services": [{"name": "bench", "api_token": token}],
            "load_roles": [{"name": "bench", "scopes": list(SCOPES), "services": ["bench"]}],
        },
        "ConfigurableHTTPProxy": {
            "command": [str(PROXY)],
            "api_url": f"http://127.0.0.1:{api + 1}",
        },
        "Spawner": {
            "cmd": [str(SANDBOX_ENV / "bin" / "jupyterhub-singleuser")],
            "args": ["--allow-root", "--ServerApp.terminals_enabled=False"],
            "notebook_dir": str(notebooks),
            "start_timeout": 60,
        },
    }
    path = folder / "jupyterhub_config.json"
    path.write_text(json.dumps(config, indent=2))
    with open(folder / "jupyterhub.log", "ab") as log:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "jupyterhub", "-f", str(path)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


async def sequential(hub: Hub, spawns: int, user: str, server: str) -> list[float]:
    await hub.call("POST", f"/users/{quote(user)}", {}, fine=(409,))  # made, or there
    times = []
    for _ in range(spawns):
        first, _ = await hub.open_and_run(user, server)
        times.append(first)
        await hub.close(user, server)
    return times


async def concurrent(hub: Hub, grants: list[str], cells: int) -> dict[str, Any]:
    started = time.perf_counter()
    results = await asyncio.gather(*(hub.open_and_run(APPLICANT, g, cells) for g in grants))
    wall = time.perf_counter() - started
    memory = sandbox_memory()
    await asyncio.gather(*(hub.close(APPLICANT, g) for g in grants))
    firsts = sorted(first for first, _ in results)
    cell_times = sorted(t for _, latencies in results for t in latencies[1:])
    return {"wall": wall, "firsts": firsts, "cells": cell_times, "memory": memory}


def sandbox_memory() -> int:
    """The memory the running sandboxes use now, from their control groups."""
    total = 0
    for usage in Path("/sys/fs/cgroup/memory/sbx").glob("*/memory.usage_in_bytes"):
        total += int(usage.read_text())
    return total


def run(
    results: Results,
    *,
    quick: bool,
    spawns: int | None = None,
    count: int | None = None,
    cells: int = 10,
    root: Path | None = None,
    warm: bool = True,
) -> None:
    """``warm=False`` leaves out the warm-up spawns: the figures then include the first
    spawn's one-off work, which only a test of the machinery should accept."""
    spawns = spawns or (5 if quick else 20)
    count = count or (5 if quick else 20)
    if os.geteuid() != 0:
        console.print("[yellow]sandboxes need root: skipping the spawn benchmark[/]")
        return
    root = root or VAR / "spawn" / time.strftime("%Y%m%dT%H%M%S")
    with platform(count, root) as (sandboxed, baseline, _):
        loop = asyncio.new_event_loop()
        try:
            if warm:  # one each (the first sandbox spawn also makes the workspace image)
                loop.run_until_complete(sequential(sandboxed, 1, APPLICANT, GRANT))
                loop.run_until_complete(sequential(baseline, 1, "bench", "warm"))
            ours = sorted(loop.run_until_complete(sequential(sandboxed, spawns, APPLICANT, GRANT)))
            plain = sorted(loop.run_until_complete(sequential(baseline, spawns, "bench", "one")))
            grants = [f"bench-{n:02d}" for n in range(1, count + 1)]
            together = loop.run_until_complete(concurrent(sandboxed, grants, cells))
        finally:
            loop.close()

    table = Table(
        f"Open sandbox → first cell executed, {spawns} spawns each (s)",
        ["spawner", "median", "p95", "min", "max"],
    )
    for name, times in (("sbx (bubblewrap, recorded)", ours), ("JupyterHub local process", plain)):
        table.add(
            name,
            f"{percentile(times, 50):.2f}",
            f"{percentile(times, 95):.2f}",
            f"{times[0]:.2f}",
            f"{times[-1]:.2f}",
        )
    ratio = percentile(ours, 50) / percentile(plain, 50)
    table.notes.append(
        f"sandboxed / plain median: {ratio:.2f}x (target ≤ 1.5x); "
        f"sandboxed median {percentile(ours, 50):.2f} s (target < 3 s)"
    )
    results.table(table)

    firsts, cell_times = together["firsts"], together["cells"]
    crowd = Table(
        f"{count} sandboxes at once, {cells} cells each",
        ["measure", "median", "p95", "max"],
    )
    crowd.add(
        "open → first cell (s)",
        f"{percentile(firsts, 50):.2f}",
        f"{percentile(firsts, 95):.2f}",
        f"{firsts[-1]:.2f}",
    )
    crowd.add(
        "later cells (ms)",
        f"{percentile(cell_times, 50) * 1000:.1f}",
        f"{percentile(cell_times, 95) * 1000:.1f}",
        f"{cell_times[-1] * 1000:.1f}",
    )
    crowd.notes.append(
        f"all {count} open and through their cells in {together['wall']:.1f} s; "
        f"memory of the running sandboxes {human_bytes(together['memory'])}"
    )
    results.table(crowd)
