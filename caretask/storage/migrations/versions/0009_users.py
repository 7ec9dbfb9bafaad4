"""People who sign in, public OAuth clients, authorization codes and refresh tokens.

Revision ID: 0009
Revises: 0008

Users are created by `caretask users create`; their passwords are scrypt hashes as client
secrets are. A public client (a browser or mobile app: no secret it could keep) is a client
row with `public` set and the redirect URIs it may be sent back to, one per line.
Authorization codes and refresh tokens are stored only as SHA-256 digests (each is 256
random bits: no slow hash needed), so that any server sharing the database can redeem them,
and a copy of the tables gives nothing that can be replayed. `family` ties the refresh
tokens that one code started: a code or refresh token used twice revokes the family.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("fhir_user", sa.String(200), nullable=False),
        sa.Column("teams", sa.Text, nullable=False),  # "Group/<id>" references, one per line
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("disabled_at", sa.BigInteger),
    )
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("redirect_uris", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "auth_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),  # s since the epoch
        sa.Column("used_at", sa.BigInteger),
    )
    op.create_index("ix_auth_codes_expires_at", "auth_codes", ["expires_at"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family"])
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("auth_codes")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("redirect_uris")
        batch.drop_column("public")
    op.drop_table("users")
