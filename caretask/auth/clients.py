"""The built-in public client: the task board that `caretask serve` itself serves at /app/.

It has no row in the database (every server knows it): its only redirect URI is the
board's callback on this server's base URL, so a code for it can only ever be delivered
back to the board itself.
"""

from __future__ import annotations

from caretask.storage.base import ClientRecord

BOARD_CLIENT_ID = "caretask-board"
BOARD_NAME = "caretask task board"
BOARD_SCOPE = "user/Task.* user/Subscription.*"
BOARD_CALLBACK = "/app/callback"


def board_client(base: str) -> ClientRecord:
    """The board's client as seen from `base` (the configured base URL, else the
    request's own scheme and host)."""
    return ClientRecord(
        BOARD_CLIENT_ID,
        BOARD_NAME,
        secret_hash="",
        scope=BOARD_SCOPE,
        revoked=False,
        public=True,
        redirect_uris=(base.rstrip("/") + BOARD_CALLBACK,),
    )
