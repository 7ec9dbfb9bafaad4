"""Subscriptions, and the events a task write records for them (the outbox).

Revision ID: 0008
Revises: 0007

An event row is written in the same transaction as the task version that triggered it, so
a write that committed always has its events; delivery reads them back in number order.
The delivery columns (delivered_through ... lease_until) are the dispatcher's: which event
the receiver acknowledged, when to try again, and which server holds the subscription now.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("resource", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("heartbeat_period", sa.Integer),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("events_since_start", sa.BigInteger, nullable=False),
        sa.Column("delivered_through", sa.BigInteger, nullable=False),
        sa.Column("failing_since", sa.BigInteger),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("last_sent", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_until", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"])
    op.create_index("ix_subscriptions_endpoint", "subscriptions", ["endpoint"])
    op.create_table(
        "subscription_events",
        sa.Column(
            "subscription_pk",
            PK,
            sa.ForeignKey("subscriptions.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.BigInteger, primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("occurred", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_subscription_events_occurred", "subscription_events", ["occurred"])


def downgrade() -> None:
    op.drop_table("subscription_events")
    op.drop_table("subscriptions")
