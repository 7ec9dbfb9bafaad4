"""A trigram index on the normalised description, for `description:contains`.

Revision ID: 0003
Revises: 0002

A B-tree serves prefix search but not substring search, which would otherwise scan every
task. SQLite: an FTS5 table with the trigram tokenizer over tasks.description_norm, kept
in step by triggers. PostgreSQL: pg_trgm's GIN index, which LIKE '%...%' uses directly.
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
    op.execute(
        "CREATE TRIGGER task_text_insert AFTER INSERT ON tasks BEGIN "
        "INSERT INTO task_text (rowid, description_norm) VALUES (new.pk, new.description_norm);"
        " END"
    )
    op.execute(
        "CREATE TRIGGER task_text_delete AFTER DELETE ON tasks BEGIN "
        "INSERT INTO task_text (task_text, rowid, description_norm) "
        "VALUES ('delete', old.pk, old.description_norm); END"
    )
    op.execute(
        "CREATE TRIGGER task_text_update AFTER UPDATE OF description_norm ON tasks BEGIN "
        "INSERT INTO task_text (task_text, rowid, description_norm) "
        "VALUES ('delete', old.pk, old.description_norm); "
        "INSERT INTO task_text (rowid, description_norm) VALUES (new.pk, new.description_norm);"
        " END"
    )
    op.execute("INSERT INTO task_text (task_text) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_tasks_description_trgm")
        return
    for trigger in ("task_text_insert", "task_text_delete", "task_text_update"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE task_text")
