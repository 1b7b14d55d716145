"""The hub of the embedded default: its configuration, and starting it beside the gateway.

The configuration is written as JSON (traitlets reads it like a ``jupyterhub_config.py``)
into ``<data dir>/hub/``, owner-only, since it holds the gateway's API token for the hub.
JupyterHub starts its proxy (configurable-http-proxy, from the project's ``node_modules``)
itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PROXY = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"


@dataclass(frozen=True)
class HubService:
    """A further client of the hub's API (e.g. a benchmark), with the scopes it holds."""

    name: str
    token: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class HubOptions:
    """Everything the hub needs to know, given by the gateway's settings."""

    folder: Path  # <data dir>/hub
    public_url: str  # where browsers reach the hub (its proxy)
    api_url: str  # where the hub's own API listens, e.g. http://127.0.0.1:8081/hub/api
    gateway_url: str  # where the hub reaches the gateway
    console_url: str  # where the hub sends people who come without a ticket
    service_token_file: Path
    sso_secret_file: Path
    hub_api_token: str
    python: Path
    stage_dir: Path
    state_dir: Path
    check_interval: float = 3.0
    idle_timeout: int = 3600
    runtime: str = "bwrap"
    docker_image: str = "sbx-sandbox:latest"
    docker_network: str = "sbx-hub"
    docker_port: int = 8888
    proxy: Path = PROXY
    services: tuple[HubService, ...] = ()


def hub_config(options: HubOptions) -> dict[str, Any]:
    public = urlsplit(options.public_url)
    api = urlsplit(options.api_url)
    folder = options.folder
    return {
        "JupyterHub": {
            "bind_url": f"{public.scheme}://{public.hostname}:{public.port}/",
            "hub_bind_url": f"{api.scheme}://{api.hostname}:{api.port}/",
            "db_url": f"sqlite:///{folder / 'jupyterhub.sqlite'}",
            "cookie_secret_file": str(folder / "jupyterhub_cookie_secret"),
            "pid_file": str(folder / "jupyterhub.pid"),
            "spawner_class": "sbx",
            "authenticator_class": "sbx",
            "allow_named_servers": True,
            "named_server_limit_per_user": 0,
            "cleanup_servers": True,
            "services": [
                {"name": "sbx-gateway", "api_token": options.hub_api_token},
                *({"name": s.name, "api_token": s.token} for s in options.services),
            ],
            "load_roles": [
                {
                    "name": "sbx-gateway",
                    "description": "The gateway stops the servers of suspended grants.",
                    "scopes": ["servers", "read:users"],
                    "services": ["sbx-gateway"],
                },
                *(
                    {"name": s.name, "scopes": list(s.scopes), "services": [s.name]}
                    for s in options.services
                ),
            ],
        },
        "ConfigurableHTTPProxy": {
            "command": [str(options.proxy)],
            "api_url": f"http://127.0.0.1:{(api.port or 8081) + 1}",
            "pid_file": str(folder / "proxy.pid"),
        },
        "SandboxSpawner": {
            "gateway_url": options.gateway_url,
            "service_token_file": str(options.service_token_file),
            "python": str(options.python),
            "stage_dir": str(options.stage_dir),
            "state_dir": str(options.state_dir),
            "check_interval": options.check_interval,
            "idle_timeout": options.idle_timeout,
            "runtime": options.runtime,
            "docker_image": options.docker_image,
            "docker_network": options.docker_network,
            "docker_port": options.docker_port,
        },
        "GatewayAuthenticator": {
            "sso_secret_file": str(options.sso_secret_file),
            "console_url": options.console_url,
        },
    }


def write_hub_config(options: HubOptions) -> Path:
    options.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    options.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    options.stage_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(options.stage_dir, 0o711)  # noqa: S103 - traversable, not listable
    path = options.folder / "jupyterhub_config.json"
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(hub_config(options), handle, indent=2)
    partial.replace(path)
    return path


def start_hub(options: HubOptions, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start JupyterHub (and its proxy) in the background; its logs go to ``log``."""
    config = write_hub_config(options)
    target = log or options.folder / "jupyterhub.log"
    with open(target, "ab") as handle:
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=options.folder,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )


def wait_for_hub(
    options: HubOptions, process: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Return once the hub answers on its public URL; raise if it ends or takes too long."""
    url = options.public_url.rstrip("/") + "/hub/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"JupyterHub did not answer on {url} within {timeout:.0f} s")


def stop_hub(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop the hub; it stops its sandboxes and its proxy on the way out."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
