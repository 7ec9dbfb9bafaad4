"""Window indexes for single-date parameters: narrow and wide values kept apart.

Revision ID: 0005
Revises: 0004

See storage.sql_search._window: with (hi - lo > 1 day) leading the index, a search for
"due this week" reads about a week of entries rather than a year of them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

DAY = 86_400_000_000
WINDOWS = {"authored": "authored", "due": "due", "modified": "modified"}


def upgrade() -> None:
    for name, column in WINDOWS.items():
        lo, hi = f"{column}_lo", f"{column}_hi"
        wide = sa.text(f"({hi} - {lo} > {DAY})")
        op.create_index(f"ix_tasks_{name}_window", "tasks", [wide, lo, hi])


def downgrade() -> None:
    for name in WINDOWS:
        op.drop_index(f"ix_tasks_{name}_window", "tasks")
