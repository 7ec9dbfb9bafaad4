"""A client's previous secret, kept for a grace period after `caretask clients rotate`;
who created each Subscription, and when it ends.

Revision ID: 0010
Revises: 0009

During the grace period the token endpoint takes the new secret or the previous one, so
that the deployments using a client can be given the new secret one by one; after it, only
the new one. The previous secret is kept only as its scrypt hash, as the current one is.

A Subscription's creator ("user:<username>" for a person, "client:<client_id>" for a
client acting for itself; none for those made before): a person's token reaches only the
Subscriptions that person created. `end_at` is the Subscription's `end` (us since the
epoch): once it has passed, its status is set to off (no more events, nor notifications).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("previous_secret_hash", sa.Text))
        batch.add_column(sa.Column("previous_secret_until", sa.BigInteger))  # s since epoch
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("created_by", sa.Text))
        batch.add_column(sa.Column("end_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("end_at")
        batch.drop_column("created_by")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret_hash")
