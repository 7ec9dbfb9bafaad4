"""SPEC 5: update is a versioned full replacement; history keeps every version."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.clients import create_task
from tests.support.seed import SEED_CREATE, new_patient, seed_task
from tests.support.server import Server


def test_update_returns_200_new_etag_and_empty_body(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    task = api.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    assert task["meta"]["versionId"] == "2"


def test_update_is_a_full_replacement(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    assert api.put(f"/Task/{task_id}", json=seed_task(owner=None, input=None)).status_code == 200
    task = api.get(f"/Task/{task_id}").json()
    assert "owner" not in task
    assert "input" not in task


def test_update_keeps_authored_on_and_the_time_of_notes_sent_again(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    note = {k: v for k, v in SEED_CREATE["note"][0].items() if k != "time"}
    api.put(f"/Task/{task_id}", json=seed_task(authoredOn=None, note=[note]))
    task = api.get(f"/Task/{task_id}").json()
    assert task["authoredOn"] == SEED_CREATE["authoredOn"]
    assert task["note"][0]["time"] == SEED_CREATE["note"][0]["time"]


def test_update_with_current_if_match_succeeds(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(f"/Task/{task_id}", json=SEED_CREATE, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'


def test_update_with_stale_if_match_is_412_and_writes_nothing(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    api.put(f"/Task/{task_id}", json=SEED_CREATE)
    response = api.put(
        f"/Task/{task_id}", json=seed_task(status="cancelled"), headers={"If-Match": 'W/"1"'}
    )
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    task = api.get(f"/Task/{task_id}").json()
    assert task["meta"]["versionId"] == "2"
    assert task["status"] == "requested"


def test_malformed_if_match_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(f"/Task/{task_id}", json=SEED_CREATE, headers={"If-Match": "banana"})
    assert response.status_code == 400


def test_racing_updates_of_one_version_never_both_succeed(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)

    def update(i: int) -> int:
        body = seed_task(description=f"writer {i}")
        return api.put(f"/Task/{task_id}", json=body, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(update, range(10)))
    assert statuses.count(200) == 1
    assert statuses.count(412) == 9
    assert api.get(f"/Task/{task_id}").json()["meta"]["versionId"] == "2"


def test_concurrent_updates_without_if_match_each_get_a_version(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)

    def update(i: int) -> int:
        return api.put(f"/Task/{task_id}", json=seed_task(description=f"w{i}")).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(update, range(8)))
    assert statuses == [200] * 8
    history = api.get(f"/Task/{task_id}/_history", params={"_count": 100}).json()
    assert history["total"] == 9
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == [
        str(v) for v in range(9, 0, -1)
    ]


def test_sixteen_writers_without_if_match_all_succeed_each_with_its_own_version(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)

    def update(writer: int) -> list[tuple[int, str | None]]:
        out = []
        for n in range(20):
            body = seed_task(description=f"writer {writer} update {n}")
            response = api.put(f"/Task/{task_id}", json=body)
            out.append((response.status_code, response.headers.get("etag")))
        return out

    with ThreadPoolExecutor(16) as pool:
        answers = [a for writer in pool.map(update, range(16)) for a in writer]
    assert [status for status, _ in answers] == [200] * 320
    assert sorted(etag for _, etag in answers) == sorted(f'W/"{v}"' for v in range(2, 322))
    current = api.get(f"/Task/{task_id}")
    assert current.headers["etag"] == 'W/"321"'
    history = api.get(f"/Task/{task_id}/_history", params={"_count": 100}).json()
    assert history["total"] == 321
    assert history["entry"][0]["resource"] == current.json()


def test_racing_if_match_writers_have_exactly_one_winner_per_version(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    for version in range(1, 11):

        def update(writer: int, version: int = version) -> httpx.Response:
            body = seed_task(description=f"round {version} writer {writer}")
            return api.put(f"/Task/{task_id}", json=body, headers={"If-Match": f'W/"{version}"'})

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(update, range(16)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 1, statuses
        assert statuses.count(412) == 15
        refused = next(r for r in responses if r.status_code == 412).json()
        assert refused["resourceType"] == "OperationOutcome"
        assert (
            f'If-Match W/"{version}" is not the current version'
            in (refused["issue"][0]["details"]["text"])
        )
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"11"'


def test_update_of_unknown_id_is_404(api: httpx.Client) -> None:
    response = api.put("/Task/00000000-0000-4000-8000-000000000000", json=SEED_CREATE)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_update_with_mismatched_body_id_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(f"/Task/{task_id}", json={**SEED_CREATE, "id": "someone-else"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.id"]


def test_update_with_matching_body_id_is_accepted(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    assert api.put(f"/Task/{task_id}", json={**SEED_CREATE, "id": task_id}).status_code == 200


def test_update_prefer_return_representation(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(
        f"/Task/{task_id}",
        json=seed_task(status="completed"),
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["meta"]["versionId"] == "2"


def test_history_lists_versions_newest_first(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    api.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    response = api.get(f"/Task/{task_id}/_history")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "history"
    assert body["total"] == 2
    statuses = [e["resource"]["status"] for e in body["entry"]]
    assert statuses == ["completed", "requested"]
    assert body["entry"][0]["response"]["etag"] == 'W/"2"'


def test_vread_returns_an_old_version_with_its_etag(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    api.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    response = api.get(f"/Task/{task_id}/_history/1")
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    assert response.json()["status"] == "requested"
    assert api.get(f"/Task/{task_id}/_history/3").status_code == 404
    assert api.get(f"/Task/{task_id}/_history/x").status_code == 404


def test_history_pages_with_count_and_offset(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    for status in ("completed", "cancelled", "requested"):
        api.put(f"/Task/{task_id}", json=seed_task(status=status))
    body = api.get(f"/Task/{task_id}/_history", params={"_count": 2, "_offset": 2}).json()
    assert body["total"] == 4
    assert [e["resource"]["meta"]["versionId"] for e in body["entry"]] == ["2", "1"]
    relations = {link["relation"] for link in body["link"]}
    assert "previous" in relations and "next" not in relations


def test_updates_survive_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    first: Server = make_server()
    token = first.token()
    with first.client(token) as client:
        task_id = create_task(client, SEED_CREATE)
        client.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    first.stop()
    second: Server = make_server(database=first.database, workdir=first.workdir)
    with second.client(token) as client:
        task = client.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    assert task["meta"]["versionId"] == "2"


def test_after_an_update_searches_find_the_new_values_and_not_the_old(api: httpx.Client) -> None:
    """The changed fields move in every index; the unchanged ones stay findable."""
    patient, old_owner, new_owner = (new_patient() for _ in range(3))
    body = seed_task(
        for_={"reference": f"Patient/{patient}"},
        owner={"reference": f"Practitioner/{old_owner}"},
        description="Fax the old referral",
    )
    task_id = create_task(api, body)
    changed = {
        **body,
        "owner": {"reference": f"Practitioner/{new_owner}"},
        "description": "Call about the new referral",
    }
    assert api.put(f"/Task/{task_id}", json=changed).status_code == 200

    def ids(**params: str) -> list[str]:
        response = api.get("/Task", params={"patient": f"Patient/{patient}", **params})
        assert response.status_code == 200
        return [e["resource"]["id"] for e in response.json().get("entry", [])]

    assert ids() == [task_id]
    assert ids(owner=f"Practitioner/{new_owner}") == [task_id]
    assert ids(owner=f"Practitioner/{old_owner}") == []
    assert ids(**{"description:contains": "new refer"}) == [task_id]
    assert ids(**{"description:contains": "old refer"}) == []
    assert ids(status="requested", label="Urgent") == [task_id]
