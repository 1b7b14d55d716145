"""export requests, their files, reviews and released tables; the sessions' code

Revision ID: 0012
Revises: 0011
Created: 2026-12-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=63), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "uploading",
                "blocked",
                "review",
                "approval",
                "second_approval",
                "released",
                "rejected",
                name="export_status",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "risk",
            sa.Enum("normal", "high", name="export_risk", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manifest", sa.Text(), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["grants.id"], name=op.f("fk_exports_grant_id_grants")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_exports_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exports_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_exports_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_exports_status"), ["status"], unique=False)

    op.create_table(
        "export_files",
        sa.Column("export_id", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("received", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["exports.id"],
            name=op.f("fk_export_files_export_id_exports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("export_id", "n", name=op.f("pk_export_files")),
    )
    op.create_table(
        "export_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("export_id", sa.String(length=32), nullable=False),
        sa.Column(
            "stage",
            sa.Enum(
                "uploading",
                "blocked",
                "review",
                "approval",
                "second_approval",
                "released",
                "rejected",
                name="export_status",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("approve", sa.Boolean(), nullable=False),
        sa.Column(
            "risk",
            sa.Enum("normal", "high", name="export_risk", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"], ["exports.id"], name=op.f("fk_export_reviews_export_id_exports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_reviews")),
    )
    with op.batch_alter_table("export_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_export_reviews_export_id"), ["export_id"], unique=False
        )

    op.create_table(
        "released_tables",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("export_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("table", sa.Text(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"], ["exports.id"], name=op.f("fk_released_tables_export_id_exports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_released_tables")),
    )
    with op.batch_alter_table("released_tables", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_released_tables_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_released_tables_export_id"), ["export_id"], unique=False
        )

    op.create_table(
        "sandbox_executions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sandbox_sessions.id"],
            name=op.f("fk_sandbox_executions_session_id_sandbox_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_executions")),
    )
    with op.batch_alter_table("sandbox_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_executions_grant_id"), ["grant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sandbox_executions_session_id"), ["session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sandbox_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_executions_session_id"))
        batch_op.drop_index(batch_op.f("ix_sandbox_executions_grant_id"))

    op.drop_table("sandbox_executions")
    with op.batch_alter_table("released_tables", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_released_tables_export_id"))
        batch_op.drop_index(batch_op.f("ix_released_tables_dataset_id"))

    op.drop_table("released_tables")
    with op.batch_alter_table("export_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_export_reviews_export_id"))

    op.drop_table("export_reviews")
    op.drop_table("export_files")
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exports_status"))
        batch_op.drop_index(batch_op.f("ix_exports_organization_id"))
        batch_op.drop_index(batch_op.f("ix_exports_grant_id"))

    op.drop_table("exports")
