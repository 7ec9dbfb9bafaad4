"""Tasks with every version, the search index, OAuth clients and the token signing key.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None

# Instants are stored as microseconds since the epoch: one integer type sorts and compares
# the same on both engines. Normalised text uses byte order ("C") so that prefix search can
# be an index range scan on PostgreSQL as it is on SQLite.
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
NORM = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("intent", sa.String(32), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("description_norm", NORM),
        sa.Column("subject_ref", sa.String(140)),
        sa.Column("subject_id", sa.String(64)),
        sa.Column("owner_ref", sa.String(140)),
        sa.Column("requester_ref", sa.String(140)),
        sa.Column("group_ref", sa.String(140)),
        sa.Column("authored_lo", sa.BigInteger),
        sa.Column("authored_hi", sa.BigInteger),
        sa.Column("due_lo", sa.BigInteger),
        sa.Column("due_hi", sa.BigInteger),
        sa.Column("resource", JSON, nullable=False),
    )
    for name, columns in (
        ("status", ["status", "pk"]),
        ("subject", ["subject_ref", "pk"]),
        ("subject_id", ["subject_id"]),
        ("owner_status", ["owner_ref", "status", "pk"]),
        ("requester", ["requester_ref", "pk"]),
        ("group", ["group_ref", "pk"]),
        ("authored", ["authored_lo"]),
        ("due", ["due_lo"]),
        ("last_updated", ["last_updated"]),
        ("description", ["description_norm"]),
    ):
        op.create_index(f"ix_tasks_{name}", "tasks", columns)

    op.create_table(
        "task_versions",
        sa.Column("task_pk", PK, sa.ForeignKey("tasks.pk"), primary_key=True),
        sa.Column("version_id", sa.Integer, primary_key=True),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("resource", JSON, nullable=False),
    )

    op.create_table(
        "task_strings",
        sa.Column("task_pk", PK, sa.ForeignKey("tasks.pk"), nullable=False),
        sa.Column("param", sa.String(32), nullable=False),
        sa.Column("norm", NORM, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_task_strings_lookup", "task_strings", ["param", "norm", "task_pk"])
    op.create_index("ix_task_strings_task", "task_strings", ["task_pk"])

    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger),
    )

    op.create_table(
        "signing_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
