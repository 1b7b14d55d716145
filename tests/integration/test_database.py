"""The schema, on SQLite and on PostgreSQL: migrations, constraints, round trips."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from gateway.db import downgrade, make_engine, migrate, session_factory
from gateway.db.models import (
    Base,
    Organization,
    OrganizationType,
    RoleGrant,
    User,
    VerificationStatus,
)

CODE = "91370200MA3C0Q0X12"  # a well-formed unified social credit code
TABLES = {
    "organizations",
    "users",
    "role_grants",
    "api_tokens",
    "browser_sessions",
    "privacy_budgets",
    "privacy_spends",
    "datasets",
    "catalog_revisions",
    "dataset_versions",
    "objections",
    "grants",
    "grant_members",
    "sandbox_uids",
    "sandbox_sessions",
    "applications",
    "application_events",
    "application_attachments",
    "application_datasets",
    "agreements",
    "organization_keys",
    "sandbox_executions",
    "exports",
    "export_files",
    "export_reviews",
    "released_tables",
    "feedback",
    "operator_verdicts",
    "alembic_version",
}


def test_migrations_build_exactly_the_models_and_undo_cleanly(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    assert set(inspect(engine).get_table_names()) == TABLES
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []  # a model change without a migration fails here
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_organizations_and_users_round_trip_with_their_constraints(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        acme = Organization(
            type=OrganizationType.APPLICATION_UNIT,
            name="青岛某某数据科技有限公司",
            credit_code=CODE,
        )
        session.add(acme)
        session.flush()
        user = User(organization_id=acme.id, username="li.wei", display_name="李伟")
        user.roles.append(RoleGrant(role="applicant", granted_by="user:admin"))
        session.add(user)
    with sessions() as session:
        loaded = session.scalars(select(User).where(User.username == "li.wei")).one()
        assert loaded.organization.name == "青岛某某数据科技有限公司"
        assert loaded.organization.verification is VerificationStatus.UNVERIFIED
        assert [grant.role for grant in loaded.roles] == ["applicant"]
        assert loaded.created_at.utcoffset() == timedelta(0)
    for duplicate in (
        Organization(type=OrganizationType.PROVIDER, name="x", credit_code=CODE),
        User(organization_id=acme.id, username="li.wei", display_name="again"),
        User(organization_id="no-such-organization", username="ghost", display_name="ghost"),
    ):
        with pytest.raises(IntegrityError), sessions.begin() as session:
            session.add(duplicate)
    with pytest.raises(IntegrityError), sessions.begin() as session:
        again = session.scalars(select(User)).one()
        again.roles.append(RoleGrant(role="applicant", granted_by="user:admin"))
    engine.dispose()


def test_sqlite_writers_wait_their_turn_in_the_process(tmp_path: Path) -> None:
    """On SQLite a second write transaction waits in a queue for the first one to end
    (instead of in SQLite's sleeping busy handler); reads do not wait."""
    import threading

    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with sessions.begin():
            inside.set()
            release.wait(10)

    def second() -> None:
        with sessions.begin():
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    with sessions() as reader:  # reading goes on meanwhile
        assert reader.scalars(select(Organization)).all() == []
    assert not second_in.wait(0.3)  # still queued behind the first writer
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_in.is_set()
    with sessions.begin(), sessions.begin():  # a write may nest another in its thread
        pass
    engine.dispose()
