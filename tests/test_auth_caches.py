"""The per-process caches in front of token checks: verified tokens and client rows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from caretask.auth import tokens
from caretask.http.auth import ClientRows
from caretask.storage import open_storage
from caretask.storage.base import ClientRecord
from caretask.storage.urls import DatabaseURL
from tests.support.server import run_cli

KEY = b"k" * 32


def test_a_cached_token_gives_the_claims_it_was_issued_with() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = tokens.issue(KEY, "client-1", "system/Task.read", ttl=60)
    first = cache.verify(token)
    assert cache.verify(token) == first
    assert (first.client_id, first.scope) == ("client-1", "system/Task.read")


def test_a_cached_token_is_refused_once_it_expires() -> None:
    cache = tokens.VerifiedTokens(KEY)
    token = tokens.issue(KEY, "client-1", "system/Task.read", ttl=1)
    expires = cache.verify(token).expires_at
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(tokens.InvalidToken):
        cache.verify(token)


def test_a_token_under_another_key_is_refused_every_time() -> None:
    cache = tokens.VerifiedTokens(KEY)
    forged = tokens.issue(b"x" * 32, "client-1", "system/Task.*", ttl=60)
    for _ in range(2):
        with pytest.raises(tokens.InvalidToken):
            cache.verify(forged)


def test_the_token_cache_keeps_at_most_its_size() -> None:
    cache = tokens.VerifiedTokens(KEY, size=3)
    issued = [tokens.issue(KEY, f"c{i}", "system/Task.read", ttl=60) for i in range(5)]
    for token in issued:
        cache.verify(token)
    assert len(cache._known) == 3
    assert list(cache._known) == issued[2:]


def test_a_client_row_is_kept_for_its_ttl_and_then_read_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clients.db'}"
    run_cli("migrate", "--database", url)

    async def main() -> None:
        storage = open_storage(DatabaseURL.parse(url))
        try:
            await storage.create_client(ClientRecord("c1", "n", "h", "system/Task.read", False))
            rows = ClientRows(storage, ttl=0.5)
            assert (await rows.get("c1")).revoked is False  # type: ignore[union-attr]
            assert await storage.revoke_client("c1")
            assert (await rows.get("c1")).revoked is False  # type: ignore[union-attr]
            await asyncio.sleep(0.55)
            assert (await rows.get("c1")).revoked is True  # type: ignore[union-attr]
            assert await rows.get("unknown") is None
        finally:
            await storage.close()

    asyncio.run(main())
