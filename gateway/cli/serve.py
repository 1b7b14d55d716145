"""``sbx serve``: run the gateway (one worker process: the ledger has one writer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import console, settings_of
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.api.deps import Services

OPERATOR_NAME = "平台运营方 Platform operator"


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Run the gateway's console and HTTP API until interrupted. On first run, print the
    one-time password of the first administrator."""
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
        run_gateway(settings, services, host=host, port=port)
    finally:
        services.close()


def run_gateway(settings: Settings, services: Services, *, host: str, port: int) -> None:
    """Serve the console and the API on ``host:port`` until interrupted (JSON log lines)."""
    import uvicorn

    from gateway.api import create_app
    from gateway.logs import log_config

    console.print(f"sbx console on http://{host}:{port}/ (API: http://{host}:{port}/api/v1/docs)")
    uvicorn.run(
        create_app(settings, services),
        host=host,
        port=port,
        log_config=log_config(),
        access_log=False,
    )
