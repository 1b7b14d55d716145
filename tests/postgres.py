"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, served on a
Unix socket only, stopped at the end. PostgreSQL refuses to run as root, so as root the
cluster runs as the ``postgres`` user that Debian's package creates."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed; `make test` installs it (system-packages.txt)"
        )
    return found


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh, empty database."""
    folder = Path(tempfile.mkdtemp(prefix="sbx-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    run = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run(
            _as_owner([postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "sbx",
                       "-E", "UTF8", "--no-locale", "--no-sync"]),
            **run,
        )  # fmt: skip
        options = f"-k {folder} -c listen_addresses='' -c fsync=off -c max_connections=50"
        subprocess.run(
            _as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                       "-w", "start"]),
            **run,
        )  # fmt: skip
        try:
            yield f"postgresql+psycopg://sbx@/postgres?host={folder}"
        finally:
            subprocess.run(
                _as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                check=False,
                capture_output=True,
                timeout=60,
            )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace")
        if log.exists():
            detail += log.read_text(errors="replace")
        raise RuntimeError(f"the test PostgreSQL cluster did not start: {detail}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
