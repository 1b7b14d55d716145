"""the authority's verdicts on the operator's year (R15)

Revision ID: 0014
Revises: 0013
Created: 2026-12-04 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_verdicts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column(
            "verdict",
            sa.Enum("pass", "fail", "rectify", name="verdict", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("rectify_by", sa.Date(), nullable=True),
        sa.Column("figures_sha256", sa.String(length=64), nullable=False),
        sa.Column("decided_by", sa.String(length=40), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_verdicts")),
        sa.UniqueConstraint("year", "round", name=op.f("uq_operator_verdicts_year")),
    )


def downgrade() -> None:
    op.drop_table("operator_verdicts")
