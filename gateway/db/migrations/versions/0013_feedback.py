"""applicants' feedback after use (R14)

Revision ID: 0013
Revises: 0012
Created: 2026-12-03 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=63), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("submitted_by", sa.String(length=40), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("quality_note", sa.Text(), nullable=False),
        sa.Column("usage", sa.Text(), nullable=False),
        sa.Column("effect", sa.Text(), nullable=False),
        sa.Column("datasets", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["grants.id"], name=op.f("fk_feedback_grant_id_grants")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_feedback_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_feedback_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_organization_id"))
        batch_op.drop_index(batch_op.f("ix_feedback_grant_id"))

    op.drop_table("feedback")
