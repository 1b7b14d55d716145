"""``sbx serve``: run the gateway (one worker process: the ledger has one writer)."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import console, settings_of
from gateway.settings import Settings
from sandbox.spawner.hub import HubOptions

if TYPE_CHECKING:
    from gateway.api.deps import Services

OPERATOR_NAME = "平台运营方 Platform operator"


HubFlag = Annotated[
    bool,
    typer.Option(
        "--hub/--no-hub",
        help="Also run JupyterHub, which opens the sandboxes (needs root: namespaces, "
        "control groups and mounts).",
    ),
]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    hub: HubFlag = True,
) -> None:
    """Run the gateway's console and HTTP API, and the hub that opens sandboxes, until
    interrupted. On first run, print the one-time password of the first administrator."""
    from gateway.api import open_services

    settings = settings_of(ctx)
    services = open_services(settings)
    try:
        first = services.identity.bootstrap_admin(
            operator_name=OPERATOR_NAME, credit_code=settings.operator_credit_code
        )
        if first is not None:
            account, password = first
            console.print(
                f"first administrator: [bold]{account.username}[/] with the one-time password "
                f"[bold]{password}[/] (shown once; change it at first sign-in)"
            )
        run_gateway(settings, services, host=host, port=port, hub=hub)
    finally:
        services.close()


def run_gateway(
    settings: Settings, services: Services, *, host: str, port: int, hub: bool = True
) -> None:
    """Serve the console and the API on ``host:port`` until interrupted (JSON log lines),
    with the hub beside it when ``hub`` is set."""
    import uvicorn

    from gateway.api import create_app
    from gateway.logs import log_config

    hub_process = _start_hub(settings, f"http://{host}:{port}") if hub else None
    console.print(f"sbx console on http://{host}:{port}/ (API: http://{host}:{port}/api/v1/docs)")
    try:
        uvicorn.run(
            create_app(settings, services),
            host=host,
            port=port,
            log_config=log_config(),
            access_log=False,
        )
    finally:
        if hub_process is not None:
            from sandbox.spawner.hub import stop_hub

            stop_hub(hub_process)


def hub_options(settings: Settings, gateway_url: str) -> HubOptions:
    """The hub's options from the settings, for a gateway reached at ``gateway_url``."""
    from gateway.sandboxes.secrets import SandboxSecrets

    secrets = SandboxSecrets.load_or_create(settings.prepare_data_dir())
    sandbox = settings.sandbox
    return HubOptions(
        folder=settings.data_dir / "hub",
        public_url=sandbox.hub_url,
        api_url=sandbox.hub_api_url,
        gateway_url=gateway_url,
        console_url=f"{gateway_url}/grants",
        service_token_file=settings.data_dir / "hub-service.token",
        sso_secret_file=settings.data_dir / "hub-sso.secret",
        hub_api_token=secrets.hub_api_token,
        python=sandbox.python,
        stage_dir=sandbox.stage_dir,
        state_dir=settings.data_dir / "sandboxes",
        check_interval=float(sandbox.poll_seconds),
        idle_timeout=sandbox.idle_minutes * 60,
        runtime=sandbox.runtime,
        docker_image=sandbox.docker_image,
        docker_network=sandbox.docker_network,
    )


def _start_hub(settings: Settings, gateway_url: str) -> subprocess.Popen[bytes] | None:
    from sandbox.spawner.hub import start_hub, stop_hub, wait_for_hub

    if os.geteuid() != 0:
        console.print(
            "[yellow]sandboxes need root (namespaces, control groups, mounts): "
            "the hub is not started[/]"
        )
        return None
    options = hub_options(settings, gateway_url)
    process = start_hub(options)
    try:
        wait_for_hub(options, process)
    except RuntimeError as exc:
        stop_hub(process)
        console.print(f"[red]the hub did not start ({exc}); see {options.folder}/jupyterhub.log")
        return None
    console.print(f"sandboxes: JupyterHub on {options.public_url} (opened from the console)")
    return process
