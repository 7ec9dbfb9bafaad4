"""The audit trail: one row per request to a FHIR endpoint (domain.audit).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("recorded", sa.BigInteger, nullable=False),  # microseconds since the epoch
        sa.Column("client_id", sa.String(200)),
        sa.Column("interaction", sa.String(32), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(64)),
        sa.Column("version_id", sa.Integer),
        sa.Column("query", sa.Text),
        sa.Column("address", sa.String(64)),
        sa.Column("status", sa.Integer, nullable=False),
    )
    op.create_index("ix_audit_events_recorded", "audit_events", ["recorded"])
    op.create_index("ix_audit_events_client", "audit_events", ["client_id", "recorded"])


def downgrade() -> None:
    op.drop_table("audit_events")
