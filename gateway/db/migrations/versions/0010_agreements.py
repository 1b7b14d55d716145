"""agreements and organizations' signing keys

Revision ID: 0010
Revises: 0009
Created: 2026-11-30 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organization_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_keys_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_organization_keys")),
    )
    with op.batch_alter_table("organization_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organization_keys_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "agreements",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("application_id", sa.String(length=32), nullable=False),
        sa.Column("applicant_id", sa.String(length=32), nullable=False),
        sa.Column("operator_id", sa.String(length=32), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum("awaiting", "signed", name="agreement_status", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applicant_key_id", sa.String(length=64), nullable=True),
        sa.Column("applicant_public_key", sa.String(length=64), nullable=True),
        sa.Column("applicant_signature", sa.String(length=128), nullable=True),
        sa.Column("applicant_signed_by", sa.String(length=40), nullable=True),
        sa.Column("applicant_signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operator_key_id", sa.String(length=64), nullable=True),
        sa.Column("operator_public_key", sa.String(length=64), nullable=True),
        sa.Column("operator_signature", sa.String(length=128), nullable=True),
        sa.Column("operator_signed_by", sa.String(length=40), nullable=True),
        sa.Column("operator_signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["applicant_id"],
            ["organizations.id"],
            name=op.f("fk_agreements_applicant_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_agreements_application_id_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["organizations.id"],
            name=op.f("fk_agreements_operator_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreements")),
        sa.UniqueConstraint("application_id", name=op.f("uq_agreements_application_id")),
        sa.UniqueConstraint("number", name=op.f("uq_agreements_number")),
    )
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreements_applicant_id"), ["applicant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agreements_operator_id"), ["operator_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreements_operator_id"))
        batch_op.drop_index(batch_op.f("ix_agreements_applicant_id"))

    op.drop_table("agreements")
    with op.batch_alter_table("organization_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organization_keys_organization_id"))

    op.drop_table("organization_keys")
