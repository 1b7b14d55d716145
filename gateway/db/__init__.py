"""The control plane's database: engines for SQLite (embedded default) and PostgreSQL,
sessions, and schema migrations with Alembic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.writes import WriterBusy, writing_here

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


class Sessions(sessionmaker[Session]):
    """Sessions of the control plane's database. State changes go through the process's
    :class:`~gateway.db.writes.WriteQueue`; ``begin()`` is for code outside it, and:

    - refuses to run on the write queue's own thread while it applies a batch (the batch
      holds the database's write lock: a second write transaction would wait for it);
    - on SQLite, which lets one transaction write at a time, first waits its turn on a
      lock in this process, which the write queue takes too. Without it, concurrent
      writers wait in SQLite's busy handler, which sleeps and retries with growing pauses
      (docs/benchmarks.md, section 5). Writers in other processes (``sbx user`` beside the
      gateway) still meet at SQLite's lock.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self._turn: AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    @contextmanager
    def begin(self) -> Iterator[Session]:
        if writing_here():
            raise WriterBusy("a job of the write queue opened a write transaction of its own")
        with self._turn, super().begin() as session:
            yield session


def session_factory(engine: Engine) -> Sessions:
    return Sessions(engine)


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
