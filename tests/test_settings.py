"""Settings, declared once in caretask.config: read from the environment, written for
worker processes, given as options of `caretask serve`, refused out of range."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import pickle
import string
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from caretask.config import SETTINGS, BadSetting, Settings
from caretask.http.timeouts import EdgeProtocol, edge_protocol
from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.server import Server, run_cli


def _other_value(name: str, value: object) -> object:
    """A valid value of a setting that is not its default."""
    if isinstance(value, bool):
        raise TypeError(name)
    if isinstance(value, int | float):
        return value + 3
    if name == "database_url":
        return "postgresql://u@db.example:5433/x"
    if name == "base_url":
        return "https://tasks.example.org/fhir"
    if name == "allowed_hosts":
        return ("a.example", "[::1]", "*")
    if name == "profile":
        return "fhir"
    if name == "log_format":
        return "json"
    if name == "metrics":
        return "a-scraper-token-of-32-characters"
    if name == "subscription_endpoints":
        return ("http://127.0.0.1:", "https://hooks.example.org/")
    if name == "cors_origins":
        return ("https://app.example", "http://localhost:3000")
    raise TypeError(name)


def test_settings_written_for_workers_read_back_the_same() -> None:
    defaults = Settings()
    changed = Settings(
        **{s.name: _other_value(s.name, getattr(defaults, s.name)) for s in SETTINGS}
    )
    assert Settings.from_env(changed.to_env()) == changed
    assert Settings.from_env(defaults.to_env()) == defaults
    assert all(getattr(changed, s.name) != getattr(defaults, s.name) for s in SETTINGS)


def test_an_empty_variable_is_the_default() -> None:
    empty = {setting.env: "" for setting in SETTINGS}
    assert Settings.from_env(empty) == Settings()


def test_the_pool_size_comes_from_the_environment() -> None:
    assert Settings.from_env({"CARETASK_DB_POOL_SIZE": "2"}).db_pool_size == 2
    assert Settings().db_pool_size == 10


def test_a_pool_size_of_0_is_refused() -> None:
    with pytest.raises(BadSetting) as refused:
        Settings.from_env({"CARETASK_DB_POOL_SIZE": "0"})
    assert str(refused.value) == "CARETASK_DB_POOL_SIZE must be greater than 0, not 0"


def test_the_edge_protocol_with_its_settings_pickles_for_worker_processes() -> None:
    settings = dataclasses.replace(Settings(), header_timeout=2.5, max_url_bytes=100)
    factory = pickle.loads(pickle.dumps(edge_protocol(settings)))
    assert factory.func is EdgeProtocol
    assert factory.keywords == {"settings": settings}


def test_serve_refuses_an_option_out_of_range_naming_the_option(tmp_path: Path) -> None:
    result = run_cli("serve", "--max-body-bytes", "0", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == "caretask: --max-body-bytes must be greater than 0, not 0\n"


def test_serve_refuses_an_allowed_host_option_with_a_port_naming_the_option(
    tmp_path: Path,
) -> None:
    result = run_cli("serve", "--allowed-hosts", "a.example:80", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == "caretask: --allowed-hosts: 'a.example:80' has a port; give the name\n"


def _slow_search_form() -> str:
    """Values no index serves, tested on every row: a search that holds its connection."""
    pairs = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2)]
    form = [("label:contains", ",".join(pairs[i * 8 : (i + 1) * 8])) for i in range(16)]
    return urlencode(form)


@pytest.mark.skipif(not POSTGRES_URL, reason="CARETASK_TEST_POSTGRES_URL is not set")
def test_a_server_holds_its_pool_and_one_listening_connection_and_no_more(
    make_server,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    import psycopg

    demo = tmp_path / "demo.ndjson"
    demo.write_text(run_cli("demo-data", "2000").stdout)
    with postgres_database() as database:
        run_cli("import", str(demo), "--database", database)
        srv: Server = make_server(database=database, env={"CARETASK_DB_POOL_SIZE": "1"})
        headers = {"Authorization": f"Bearer {srv.token()}"}
        name = urlsplit(database).path.lstrip("/")
        counts: list[int] = []

        async def searches() -> list[int]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
                running = [
                    asyncio.create_task(client.get(f"/Task?{_slow_search_form()}", headers=headers))
                    for _ in range(6)
                ]
                with psycopg.connect(database, autocommit=True) as watcher:
                    while not all(task.done() for task in running):
                        row = watcher.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,),
                        ).fetchone()
                        assert row is not None
                        counts.append(row[0])
                        await asyncio.sleep(0.05)
                return [r.status_code for r in await asyncio.gather(*running)]

        statuses = asyncio.run(searches())
        srv.stop()
    assert statuses == [200] * 6, statuses
    assert max(counts) == 2  # the pool of 1 and the LISTEN for other servers' events
