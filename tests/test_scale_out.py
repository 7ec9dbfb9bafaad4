"""Several `caretask serve` processes sharing one database behave as one server (SPEC 8).

Each test runs against a cluster: two serve processes on different ports, each with
`--workers 2`, sharing one PostgreSQL database or one SQLite file.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.clients import within_client_cache_time
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, new_patient
from tests.support.server import Server

CLUSTER_SIZE = 2


@pytest.fixture(scope="module")
def cluster(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    workdir = tmp_path_factory.mktemp(f"cluster-{engine}")
    with ExitStack() as stack:
        url = stack.enter_context(engine_database(engine, workdir))
        servers = []
        for _ in range(CLUSTER_SIZE):
            servers.append(stack.enter_context(Server(url, workdir, extra=("--workers", "2"))))
        yield servers


@pytest.fixture(scope="module")
def cluster_token(cluster: list[Server]) -> str:
    return cluster[0].token()


def _clients(cluster: list[Server], token: str) -> list[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=50)
    return [
        httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=60, limits=limits)
        for srv in cluster
    ]


def test_a_token_issued_by_one_server_is_accepted_by_the_others(cluster: list[Server]) -> None:
    token = cluster[0].token()
    for srv in cluster[1:]:
        with srv.client(token) as client:
            response = client.get("/Task", params={"_count": 1})
        assert response.status_code == 200, response.text


def test_a_client_revoked_through_one_server_database_is_refused_by_all(
    cluster: list[Server],
) -> None:
    from tests.support.server import run_cli

    creds = cluster[0].create_client()
    response = httpx.post(
        f"{cluster[1].url}/auth/token",
        data={"grant_type": "client_credentials", **creds},
    )
    token = response.json()["access_token"]
    run_cli("clients", "revoke", creds["client_id"], "--database", cluster[0].database)
    for srv in cluster:
        with srv.client(token) as client:
            refused = within_client_cache_time(lambda: client.get("/Task", params={"_count": 1}))
            assert refused.status_code == 401


def test_concurrent_creates_over_all_servers_land_once_each_and_are_found_everywhere(
    cluster: list[Server], cluster_token: str
) -> None:
    patient = new_patient()
    body = {**SEED_CREATE, "for": {"reference": f"Patient/{patient}"}}

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = itertools.islice(itertools.cycle(clients), 200)
            return await asyncio.gather(*(client.post("/Task", json=body) for client in targets))
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {201: 200}
    ids = {r.headers["location"].rsplit("/", 1)[1] for r in responses}
    assert len(ids) == 200
    for srv in cluster:
        with srv.client(cluster_token) as client:
            found: set[str] = set()
            params: dict[str, str | int] = {"patient": patient, "_count": 100}
            page = client.get("/Task", params=params).json()
            assert page["total"] == 200
            while True:
                found |= {entry["resource"]["id"] for entry in page["entry"]}
                nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
                if not nxt:
                    break
                page = client.get(nxt[0]).json()
        assert found == ids


RACERS = 50


async def _race(cluster: list[Server], token: str, task_id: str) -> tuple[list[int], int]:
    """Each racer reads, then updates with If-Match, retrying on 412 until it succeeds.

    Returns the version each success replaced, and the number of 412s.
    """
    clients = _clients(cluster, token)
    replaced: list[int] = []
    conflicts = 0

    async def racer(i: int) -> None:
        nonlocal conflicts
        client = clients[i % len(clients)]
        body = {**SEED_CREATE, "id": task_id, "description": f"racer {i}"}
        for _ in range(RACERS * 4):
            current = await client.get(f"/Task/{task_id}")
            assert current.status_code == 200, current.text
            version = int(current.json()["meta"]["versionId"])
            response = await client.put(
                f"/Task/{task_id}", json=body, headers={"If-Match": f'W/"{version}"'}
            )
            if response.status_code == 200:
                assert response.headers["etag"] == f'W/"{version + 1}"'
                replaced.append(version)
                return
            assert response.status_code == 412, response.text
            conflicts += 1
        raise AssertionError(f"racer {i} never won")

    try:
        await asyncio.gather(*(racer(i) for i in range(RACERS)))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return replaced, conflicts


def test_racing_if_match_writers_across_servers_lose_no_update(
    cluster: list[Server], cluster_token: str, tmp_path: Path
) -> None:
    with cluster[0].client(cluster_token) as client:
        created = client.post("/Task", json=SEED_CREATE)
        task_id = created.headers["location"].rsplit("/", 1)[1]

    replaced, conflicts = asyncio.run(_race(cluster, cluster_token, task_id))

    # exactly one success per version: every version 1..50 was replaced once, and only once
    assert sorted(replaced) == list(range(1, RACERS + 1))
    print(f"racing writers: {len(replaced)} x 200, {conflicts} x 412")
    for srv in cluster:
        with srv.client(cluster_token) as client:
            task = client.get(f"/Task/{task_id}").json()
            history = client.get(f"/Task/{task_id}/_history", params={"_count": 100}).json()
        assert task["meta"]["versionId"] == str(len(replaced) + 1)
        assert history["total"] == RACERS + 1
        descriptions = [e["resource"]["description"] for e in history["entry"][:-1]]
        assert sorted(descriptions) == sorted(f"racer {i}" for i in range(RACERS))


async def _blind_writers(
    cluster: list[Server], token: str, task_id: str, writers: int, each: int
) -> list[tuple[int, str | None]]:
    """`writers` clients, spread over the servers, each sending `each` PUTs without If-Match."""
    clients = _clients(cluster, token)

    async def writer(i: int) -> list[tuple[int, str | None]]:
        client = clients[i % len(clients)]
        out = []
        for n in range(each):
            body = {**SEED_CREATE, "description": f"writer {i} update {n}"}
            response = await client.put(f"/Task/{task_id}", json=body)
            out.append((response.status_code, response.headers.get("etag")))
        return out

    try:
        done = await asyncio.gather(*(writer(i) for i in range(writers)))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return [answer for answers in done for answer in answers]


def test_updates_without_if_match_across_servers_never_fail_for_contention(
    cluster: list[Server], cluster_token: str
) -> None:
    with cluster[0].client(cluster_token) as client:
        created = client.post("/Task", json=SEED_CREATE)
        task_id = created.headers["location"].rsplit("/", 1)[1]

    answers = asyncio.run(_blind_writers(cluster, cluster_token, task_id, 16, 20))

    assert Counter(status for status, _ in answers) == {200: 320}
    assert sorted(etag for _, etag in answers) == sorted(f'W/"{v}"' for v in range(2, 322))
    for srv in cluster:
        with srv.client(cluster_token) as client:
            assert client.get(f"/Task/{task_id}").headers["etag"] == 'W/"321"'
            history = client.get(f"/Task/{task_id}/_history", params={"_count": 1}).json()
        assert history["total"] == 321


def test_identical_conditional_creates_racing_over_all_servers_make_one_task(
    cluster: list[Server], cluster_token: str
) -> None:
    identifier = f"urn:caretask:test|race-{new_patient()}"
    body = {**SEED_CREATE, "identifier": [_identifier(identifier)]}
    headers = {"If-None-Exist": f"identifier={identifier}"}

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = itertools.islice(itertools.cycle(clients), RACERS)
            return await asyncio.gather(
                *(client.post("/Task", json=body, headers=headers) for client in targets)
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {201: 1, 200: RACERS - 1}
    ids = {r.headers["location"].split("/Task/")[1].split("/")[0] for r in responses}
    assert len(ids) == 1
    assert {r.headers["etag"] for r in responses} == {'W/"1"'}
    with cluster[1].client(cluster_token) as client:
        found = client.get("/Task", params={"identifier": identifier}).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["id"] in ids


def _identifier(token: str) -> dict[str, str]:
    system, value = token.split("|")
    return {"system": system, "value": value}


CONDITIONAL_UPDATERS = 20


def test_identical_conditional_updates_racing_over_all_servers_make_one_task(
    cluster: list[Server], cluster_token: str
) -> None:
    """PUT /Task?identifier=... 20 times at once over both servers: one creates (201), the
    others each find that task and update it (200), one version each, as they are
    serialized on their search (storage Serialize) like conditional creates."""
    identifier = f"urn:caretask:test|update-race-{new_patient()}"
    body = {**SEED_CREATE, "identifier": [_identifier(identifier)]}

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = itertools.islice(itertools.cycle(clients), CONDITIONAL_UPDATERS)
            return await asyncio.gather(
                *(
                    client.put("/Task", params={"identifier": identifier}, json=body)
                    for client in targets
                )
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {201: 1, 200: CONDITIONAL_UPDATERS - 1}
    ids = {r.headers["location"].split("/Task/")[1].split("/")[0] for r in responses}
    assert len(ids) == 1
    versions = sorted(int(r.headers["etag"][3:-1]) for r in responses)
    assert versions == list(range(1, CONDITIONAL_UPDATERS + 1))
    with cluster[1].client(cluster_token) as client:
        found = client.get("/Task", params={"identifier": identifier}).json()
    assert found["total"] == 1


def test_transactions_racing_with_the_same_conditional_creates_in_either_order_make_one_each(
    cluster: list[Server], cluster_token: str
) -> None:
    """Transactions that create A and B if none exist, half listing A first, half B: each
    takes its conditions' locks in one order (never a deadlock), and exactly one task of
    each is made."""
    identifiers = [f"urn:caretask:test|tx-race-{new_patient()}" for _ in range(2)]

    def entry(identifier: str) -> dict[str, object]:
        return {
            "resource": {**SEED_CREATE, "identifier": [_identifier(identifier)]},
            "request": {"method": "POST", "url": "Task", "ifNoneExist": f"identifier={identifier}"},
        }

    def bundle(i: int) -> dict[str, object]:
        entries = [entry(x) for x in (identifiers if i % 2 else identifiers[::-1])]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = itertools.islice(itertools.cycle(clients), CONDITIONAL_UPDATERS)
            return await asyncio.gather(
                *(client.post("/", json=bundle(i)) for i, client in enumerate(targets))
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {200: CONDITIONAL_UPDATERS}
    statuses = Counter(e["response"]["status"] for r in responses for e in r.json()["entry"])
    assert statuses == {"201 Created": 2, "200 OK": 2 * CONDITIONAL_UPDATERS - 2}
    with cluster[0].client(cluster_token) as client:
        for identifier in identifiers:
            assert client.get("/Task", params={"identifier": identifier}).json()["total"] == 1


def test_conditional_creates_racing_with_differently_written_searches_make_one_task(
    cluster: list[Server], cluster_token: str
) -> None:
    """Searches that select the same tasks take the same lock however they are written:
    other result parameters, their order, the encoding of `|`."""
    identifier = f"urn:caretask:test|variant-{new_patient()}"
    body = {**SEED_CREATE, "identifier": [_identifier(identifier)]}
    encoded = identifier.replace("|", "%7C")
    variants = [
        f"identifier={identifier}",
        f"identifier={identifier}&_total=none",
        f"_count=1&identifier={identifier}",
        f"identifier={identifier}&_sort=_id",
        f"Task?identifier={encoded}&_summary=false",
    ]

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = zip(itertools.cycle(clients), itertools.cycle(variants), strict=False)
            return await asyncio.gather(
                *(
                    client.post("/Task", json=body, headers={"If-None-Exist": search})
                    for client, search in itertools.islice(targets, 30)
                )
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 29}
    with cluster[0].client(cluster_token) as client:
        assert client.get("/Task", params={"identifier": identifier}).json()["total"] == 1


CLAIMERS, QUEUE = 50, 20


def test_fifty_claimers_at_once_over_all_servers_get_each_of_twenty_tasks_exactly_once(
    cluster: list[Server], cluster_token: str
) -> None:
    """Issue 17's race: $claim-next from 50 claimers at once, spread over the servers (each
    with two workers) on one database, on a queue of 20 tasks."""
    patient = new_patient()
    queue = {**SEED_CREATE, "for": {"reference": f"Patient/{patient}"}}
    queue.pop("owner")
    with cluster[0].client(cluster_token) as client:
        for _ in range(QUEUE):
            assert client.post("/Task", json=queue).status_code == 201

    def claim(claimer: int) -> dict[str, object]:
        return {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "criteria", "valueString": f"patient={patient}&status=requested"},
                {"name": "owner", "valueReference": {"reference": f"Practitioner/c{claimer}"}},
            ],
        }

    async def run() -> list[httpx.Response]:
        clients = _clients(cluster, cluster_token)
        try:
            targets = itertools.islice(itertools.cycle(clients), CLAIMERS)
            return await asyncio.gather(
                *(c.post("/Task/$claim-next", json=claim(i)) for i, c in enumerate(targets))
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    responses = asyncio.run(run())
    assert Counter(r.status_code for r in responses) == {200: QUEUE, 404: CLAIMERS - QUEUE}
    won = {
        r.json()["id"]: r.json()["owner"]["reference"] for r in responses if r.status_code == 200
    }
    assert len(won) == QUEUE  # no task given twice
    assert len(set(won.values())) == QUEUE  # no claimer given two
    nothing_left = [
        r.json()["issue"][0]["details"]["text"] for r in responses if r.status_code == 404
    ]
    assert set(nothing_left) == {"no unowned task matches"}
    with cluster[1].client(cluster_token) as client:
        stored = client.get("/Task", params={"patient": patient, "_count": 100}).json()["entry"]
    assert {e["resource"]["id"]: e["resource"]["owner"]["reference"] for e in stored} == won
