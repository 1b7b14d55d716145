"""``sbx sandbox run``: a command in exactly the isolation a notebook kernel gets.

For operators, batch jobs and tests. The gateway checks the grant as it does for the hub
(the user must be an active member of an active grant), records the session and the
command in the ledger before it runs, and the command runs as the user's own uid with the
grant's views at ``/data``, no network, and the sandbox's limits. A batch run has its own
workspace for the user and grant, apart from the notebook server's.

With the Docker runtime (``sandbox.runtime = docker``) the command is a container of the
sandbox image with no network, as a notebook's kernel is, and what it prints is copied to
this command's output as it comes.

Exit codes: the command's own; 1 refused or failed to start; 2 bad usage.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from typing import Annotated

import typer

from gateway.cli.common import fail, settings_of
from gateway.settings import SandboxSettings
from sandbox.runtime.bwrap import BubblewrapRuntime
from sandbox.runtime.docker import DockerRuntime
from sandbox.runtime.spec import Limits, SandboxError, SandboxSpec, sandbox_name

app = typer.Typer(help="Sandboxes: run a command in a grant's sandbox.", no_args_is_help=True)


@app.command("run", context_settings={"allow_interspersed_args": False})
def run(
    ctx: typer.Context,
    grant: Annotated[str, typer.Option("--grant", help="The grant whose sandbox to use.")],
    user: Annotated[
        str, typer.Option("--user", help="The applicant on whose behalf the command runs.")
    ],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
) -> None:
    """Run COMMAND in USER's sandbox for GRANT (after `--`), and exit with its status."""
    from gateway.api import open_services
    from gateway.identity.model import NotFound
    from gateway.sandboxes.service import SandboxRefused

    if os.geteuid() != 0:
        fail("sandboxes need root (namespaces, control groups and mounts)")
    settings = settings_of(ctx)
    services = open_services(settings)
    sandboxes = services.sandboxes
    if sandboxes is None:
        services.close()
        fail("this gateway has no sandboxes configured")
    try:
        started = sandboxes.start_session(user, grant)
    except (SandboxRefused, NotFound) as exc:
        services.close()
        fail(str(exc))
    status = 1
    name = sandbox_name(started.uid, grant, kind="r")
    try:
        spec = SandboxSpec(
            name=name,
            uid=started.uid,
            gid=started.gid,
            views=started.views,
            state=settings.data_dir / "sandboxes" / name,
            stage=settings.sandbox.stage_dir / name,
            python=settings.sandbox.python,
            limits=Limits.from_dict(started.limits),
            env={"SBX_GRANT": grant},
        )
        sandboxes.record_execution(
            started.token,
            kernel="sbx-sandbox-run",
            message=uuid.uuid4().hex,
            kind="command",
            code=shlex.join(command),
        )
        try:
            runtime = runtime_of(settings.sandbox)
            try:
                runtime.prepare(spec)
                if isinstance(runtime, DockerRuntime):
                    process = runtime.launch(spec, command)
                    process.copy_output(sys.stdout.buffer)
                    status = process.wait()
                else:
                    status = runtime.launch(spec, command).wait()
            finally:
                runtime.release(spec)
        except SandboxError as exc:
            fail(str(exc))
    finally:
        sandboxes.end_session(started.session, f"command exited with status {status}")
        services.close()
    raise typer.Exit(status)


def runtime_of(settings: SandboxSettings) -> BubblewrapRuntime | DockerRuntime:
    """The configured runtime (Docker's engine from ``DOCKER_HOST``, as the hub's)."""
    if settings.runtime == "docker":
        return DockerRuntime(
            image=settings.docker_image, hub_network=settings.docker_network, python=settings.python
        )
    return BubblewrapRuntime()
