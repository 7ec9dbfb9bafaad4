"""fhirpy posts a transaction Bundle (client.execute) and makes a conditional update
(SearchSet.update), through its own API, against a real server."""

from __future__ import annotations

import uuid

from fhirpy import SyncFHIRClient

from tests.interop.scenario import Interop, distinct_task
from tests.interop.test_fhirpy import fhirpy_client


def _transaction(client: SyncFHIRClient) -> tuple[dict[str, object], str]:
    parent, child = distinct_task(), distinct_task()
    urn = f"urn:uuid:{uuid.uuid4()}"
    child.body["partOf"] = [{"reference": urn}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": parent.body, "request": {"method": "POST", "url": "Task"}},
            {"resource": child.body, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    return client.execute("", method="post", data=bundle), child.patient


def test_fhirpy_posts_a_transaction_whose_references_resolve(any_profile: Interop) -> None:
    client = fhirpy_client(any_profile)
    answered, patient = _transaction(client)
    assert answered["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in answered["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    parent_id = answered["entry"][0]["response"]["location"].split("/")[1]
    child = client.resources("Task").search(patient=f"Patient/{patient}").fetch_all()
    assert [c.partOf[0].reference for c in child] == [f"Task/{parent_id}"]


def test_fhirpy_conditional_update_creates_then_updates(fhir_profile: Interop) -> None:
    client = fhirpy_client(fhir_profile)
    task = distinct_task()
    identifier = uuid.uuid4().hex
    task.body["identifier"] = [{"system": "urn:caretask:interop", "value": identifier}]
    search = client.resources("Task").search(identifier=f"urn:caretask:interop|{identifier}")
    created, was_created = search.update(client.resource("Task", **task.body))
    assert was_created
    task.body["status"] = "completed"
    updated, was_created = search.update(client.resource("Task", **task.body))
    assert not was_created
    assert (updated.id, updated.status, updated.meta.versionId) == (created.id, "completed", "2")
