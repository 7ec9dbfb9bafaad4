"""The change feed's index: every version in the feed's order (GET /_history).

Revision ID: 0007
Revises: 0006

History pages go newest first by (last_updated, task_pk, version_id) and resume after
the last entry a page showed (keyset paging): one index range, however deep the page.
"""

from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_index(
        "ix_task_versions_feed", "task_versions", ["last_updated", "task_pk", "version_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_task_versions_feed", "task_versions")
