"""grants name the agreement they were made from

Revision ID: 0011
Revises: 0010
Created: 2026-12-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agreement_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_grants_agreement_id"), ["agreement_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_agreement_id"))
        batch_op.drop_column("agreement_id")
