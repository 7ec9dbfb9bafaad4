"""Date indexes hold both ends of each range; owner gets a pk-ordered index of its own.

Revision ID: 0004
Revises: 0003

A date search compares both ends of the stored range (FHIR search on ranges); with only
the low end indexed every candidate row had to be read from the table. (lo, hi) makes the
count of "due this week" over a million tasks a scan of the index alone. (owner_ref, pk)
lets a page of one owner's tasks come in creation order without sorting them all.
"""

from alembic import op

revision = "0004"
down_revision = "0003"

RANGES = {
    "ix_tasks_authored": ("authored_lo", "authored_hi"),
    "ix_tasks_due": ("due_lo", "due_hi"),
    "ix_tasks_modified": ("modified_lo", "modified_hi"),
    "ix_tasks_period": ("period_lo", "period_hi"),
}


def upgrade() -> None:
    for name, (lo, hi) in RANGES.items():
        op.drop_index(name, "tasks")
        op.create_index(name, "tasks", [lo, hi])
    op.create_index("ix_tasks_owner", "tasks", ["owner_ref", "pk"])


def downgrade() -> None:
    op.drop_index("ix_tasks_owner", "tasks")
    for name, (lo, _) in RANGES.items():
        op.drop_index(name, "tasks")
        op.create_index(name, "tasks", [lo])
