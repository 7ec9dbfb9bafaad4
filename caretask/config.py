"""Server settings, from the command line or the environment (workers read the latter)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    database_url: str
    base_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    token_ttl: int = 3600
    # how long a server may answer from its copy of a client's row: a revocation takes
    # effect on every server within this many seconds
    client_cache_seconds: float = 1.0

    @classmethod
    def from_env(cls) -> Settings:
        from caretask.storage.urls import DEFAULT_URL

        return cls(
            database_url=os.environ.get("CARETASK_DATABASE_URL") or DEFAULT_URL,
            base_url=(os.environ.get("CARETASK_BASE_URL") or "").rstrip("/") or None,
            max_body_bytes=int(os.environ.get("CARETASK_MAX_BODY_BYTES") or 1024 * 1024),
            token_ttl=int(os.environ.get("CARETASK_TOKEN_TTL") or 3600),
            client_cache_seconds=float(os.environ.get("CARETASK_CLIENT_CACHE_SECONDS") or 1.0),
        )

    def to_env(self) -> dict[str, str]:
        env = {
            "CARETASK_DATABASE_URL": self.database_url,
            "CARETASK_MAX_BODY_BYTES": str(self.max_body_bytes),
            "CARETASK_TOKEN_TTL": str(self.token_ttl),
            "CARETASK_CLIENT_CACHE_SECONDS": str(self.client_cache_seconds),
        }
        if self.base_url:
            env["CARETASK_BASE_URL"] = self.base_url
        return env
