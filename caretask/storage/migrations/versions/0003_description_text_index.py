"""A trigram index on the normalised description, for `description:contains`.

Revision ID: 0003
Revises: 0002

A B-tree serves prefix search but not substring search, which would otherwise scan every
task. SQLite: an FTS5 table with the trigram tokenizer over tasks.description_norm, kept
in step by the SQLite engine's writes (not by triggers: an FTS5 insert from a trigger
flushes the index on every statement, which made bulk loads twice as slow).
PostgreSQL: pg_trgm's GIN index, which LIKE '%...%' uses directly.
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_tasks_description_trgm ON tasks "
            "USING gin (description_norm gin_trgm_ops)"
        )
        return
    op.execute(
        "CREATE VIRTUAL TABLE task_text USING fts5(description_norm, content='tasks', "
        "content_rowid='pk', tokenize='trigram', detail='none')"
    )
    op.execute("INSERT INTO task_text (task_text) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_tasks_description_trgm")
        return
    op.execute("DROP TABLE task_text")
