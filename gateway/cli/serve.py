"""``sbx serve``: run the gateway (one worker process: the ledger has one writer)."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.common import console, settings_of


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Run the gateway's HTTP API until interrupted. On first run, print the one-time
    password of the first administrator."""
    import uvicorn

    from gateway.api import create_app, open_services
    from gateway.logs import log_config

    settings = settings_of(ctx)
    services = open_services(settings)
    first = services.identity.bootstrap_admin(
        operator_name="平台运营方 Platform operator", credit_code=settings.operator_credit_code
    )
    if first is not None:
        account, password = first
        console.print(
            f"first administrator: [bold]{account.username}[/] with the one-time password "
            f"[bold]{password}[/] (shown once; change it at first sign-in)"
        )
    console.print(f"sbx gateway on http://{host}:{port}/api/v1/docs")
    try:
        uvicorn.run(
            create_app(settings, services),
            host=host,
            port=port,
            log_config=log_config(),
            access_log=False,
        )
    finally:
        services.close()
