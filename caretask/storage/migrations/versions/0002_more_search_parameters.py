"""Index columns and tables for the remaining R4 Task search parameters.

Revision ID: 0002
Revises: 0001

Adds priority, lastModified and executionPeriod columns, a table of token values
(identifier, code, business-status, performer, group-identifier) and one of references
(focus, encounter, based-on, part-of), and `caretask_meta`, which records the version of
the index extraction. The rows themselves are filled by the re-index that `caretask
migrate` runs whenever the recorded version is older than the code's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("priority", sa.String(16)))
        batch.add_column(sa.Column("modified_lo", sa.BigInteger))
        batch.add_column(sa.Column("modified_hi", sa.BigInteger))
        batch.add_column(sa.Column("period_lo", sa.BigInteger))
        batch.add_column(sa.Column("period_hi", sa.BigInteger))
    op.create_index("ix_tasks_priority", "tasks", ["priority", "pk"])
    op.create_index("ix_tasks_modified", "tasks", ["modified_lo"])
    op.create_index("ix_tasks_period", "tasks", ["period_lo"])

    op.create_table(
        "task_tokens",
        sa.Column("task_pk", PK, sa.ForeignKey("tasks.pk"), nullable=False),
        sa.Column("param", sa.String(32), nullable=False),
        sa.Column("system", sa.Text),
        sa.Column("code", sa.Text, nullable=False),
    )
    op.create_index("ix_task_tokens_lookup", "task_tokens", ["param", "code", "task_pk"])
    op.create_index("ix_task_tokens_task", "task_tokens", ["task_pk", "param", "code"])

    op.create_table(
        "task_refs",
        sa.Column("task_pk", PK, sa.ForeignKey("tasks.pk"), nullable=False),
        sa.Column("param", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(140), nullable=False),
        sa.Column("ref_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_task_refs_lookup", "task_refs", ["param", "ref", "task_pk"])
    op.create_index("ix_task_refs_id", "task_refs", ["param", "ref_id"])
    op.create_index("ix_task_refs_task", "task_refs", ["task_pk", "param", "ref"])
    # a search that matches many tasks probes each task's rows: (task_pk, param, value)
    op.drop_index("ix_task_strings_task", "task_strings")
    op.create_index("ix_task_strings_task", "task_strings", ["task_pk", "param", "norm"])

    op.create_table(
        "caretask_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("caretask_meta")
    op.drop_index("ix_task_strings_task", "task_strings")
    op.create_index("ix_task_strings_task", "task_strings", ["task_pk"])
    op.drop_table("task_refs")
    op.drop_table("task_tokens")
    op.drop_index("ix_tasks_period", "tasks")
    op.drop_index("ix_tasks_modified", "tasks")
    op.drop_index("ix_tasks_priority", "tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in ("period_hi", "period_lo", "modified_hi", "modified_lo", "priority"):
            batch.drop_column(column)
