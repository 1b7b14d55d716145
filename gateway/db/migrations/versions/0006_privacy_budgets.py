"""privacy budgets of grants and their spends

Revision ID: 0006
Revises: 0005
Created: 2026-11-25 23:59:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("total_micro", sa.BigInteger(), nullable=False),
        sa.Column("spent_micro", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_privacy_budgets")),
    )
    op.create_table(
        "privacy_spends",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("epsilon_micro", sa.BigInteger(), nullable=False),
        sa.Column("spent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["privacy_budgets.grant_id"],
            name=op.f("fk_privacy_spends_grant_id_privacy_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_spends")),
    )
    op.create_index(
        op.f("ix_privacy_spends_grant_id"), "privacy_spends", ["grant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_spends_grant_id"), table_name="privacy_spends")
    op.drop_table("privacy_spends")
    op.drop_table("privacy_budgets")
