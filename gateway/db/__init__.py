"""The control plane's database: engines for SQLite (embedded default) and PostgreSQL,
sessions, and schema migrations with Alembic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url``. SQLite files run in WAL mode with foreign keys enforced and a
    busy timeout, so several workers can share one file."""
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **options)


class _QueuedWrites(sessionmaker[Session]):
    """Sessions for SQLite, which lets one transaction write at a time: ``begin()`` (how
    every state change opens its transaction) first waits its turn on a lock in this
    process. Without it, concurrent writers wait in SQLite's busy handler, which sleeps
    and retries with growing pauses — seconds of tail latency under load, while the
    writer ahead appends its audit entry durably (docs/benchmarks.md, section 5). Writers
    in other processes (``sbx user`` beside the gateway) still meet at SQLite's lock."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self._turn = threading.RLock()  # re-entrant: a write may nest another

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with self._turn, super().begin() as session:
            yield session


def session_factory(engine: Engine) -> sessionmaker[Session]:
    if engine.dialect.name == "sqlite":
        return _QueuedWrites(engine)
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)
