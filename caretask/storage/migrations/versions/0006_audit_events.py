"""The audit trail: records of requests to FHIR endpoints, a batch per row (domain.audit).

Revision ID: 0006
Revises: 0005

A row per request cost a noticeable share of a read's CPU on SQLite (the row and two
index entries); a batch (the records of up to half a second, as one JSON array) costs a
small fraction of that per record. `records` holds arrays in the order
of domain.audit.FIELDS; `clients` the batch's client ids, one per line, so that a search
by client reads only the batches that name it.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_batches",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("first_recorded", sa.BigInteger, nullable=False),  # microseconds
        sa.Column("last_recorded", sa.BigInteger, nullable=False),
        sa.Column("clients", sa.Text, nullable=False),
        sa.Column("records", JSON, nullable=False),
    )
    op.create_index("ix_audit_batches_last_recorded", "audit_batches", ["last_recorded"])


def downgrade() -> None:
    op.drop_table("audit_batches")
