"""grants, their members, sandbox uids and sandbox sessions

Revision ID: 0008
Revises: 0007
Created: 2026-11-28 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("views", sa.String(length=63), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "suspended",
                "expired",
                "terminated",
                name="grant_status",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("gid", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suspended_by", sa.String(length=40), nullable=True),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_grants_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint("gid", name=op.f("uq_grants_gid")),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_grants_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "grant_members",
        sa.Column("grant_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
            name=op.f("fk_grant_members_grant_id_grants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_grant_members_user_id_users")
        ),
        sa.PrimaryKeyConstraint("grant_id", "user_id", name=op.f("pk_grant_members")),
    )
    with op.batch_alter_table("grant_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grant_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "sandbox_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["grants.id"], name=op.f("fk_sandbox_sessions_grant_id_grants")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sandbox_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sandbox_sessions_token_hash")),
    )
    with op.batch_alter_table("sandbox_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sandbox_sessions_grant_id"), ["grant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sandbox_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "sandbox_uids",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sandbox_uids_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_sandbox_uids")),
        sa.UniqueConstraint("uid", name=op.f("uq_sandbox_uids_uid")),
    )


def downgrade() -> None:
    op.drop_table("sandbox_uids")
    with op.batch_alter_table("sandbox_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_sandbox_sessions_grant_id"))

    op.drop_table("sandbox_sessions")
    with op.batch_alter_table("grant_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grant_members_user_id"))

    op.drop_table("grant_members")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_organization_id"))

    op.drop_table("grants")
