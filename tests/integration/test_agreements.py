"""Agreements through the API: made from an approved application, signed by the
application unit and the operator with their organizations' keys, and verifiable against
the keys the ledger published."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from audit import canonical
from gateway.agreements.document import signature_problems
from gateway.db.models import Agreement
from tests.integration import test_catalog
from tests.integration.test_applications import approved, form, submitted
from tests.integration.test_catalog import Platform, published

platform = test_catalog.platform  # the catalog's platform, with a published dataset on demand


def published_keys(platform: Platform) -> dict[str, str]:
    return {
        e["detail"]["key_id"]: e["detail"]["public_key"]
        for e in platform.entries()
        if e.get("action") == "organization.key"
    }


def test_an_agreement_is_made_signed_by_both_and_verifies_on_the_ledger(
    platform: Platform,
) -> None:
    dataset = published(platform)
    application = approved(platform, dataset)
    none_yet = platform.call("applicant", "GET", f"/applications/{application}/agreement")
    assert none_yet.status_code == 404
    made = platform.call("applicant", "POST", f"/applications/{application}/agreement")
    assert made.status_code == 200, made.text
    agreement: dict[str, Any] = made.json()
    looked_up = platform.call("reviewer", "GET", f"/applications/{application}/agreement")
    assert looked_up.json()["id"] == agreement["id"]
    assert agreement["status"] == "awaiting"
    assert agreement["number"].startswith("SBX-2026-")
    document = agreement["document"]
    assert document["parties"]["applicant"]["id"] == platform.organizations["application_unit"]
    assert document["parties"]["operator"]["id"] == platform.organizations["operator"]
    [scope] = document["scope"]
    fields = {f["name"]: f for f in scope["fields"]}
    assert fields["cost"]["view"] == "aggregate" and fields["cost"]["justification"]
    assert document["period"] == {"starts_on": "2026-10-15", "ends_on": "2027-10-14"}
    assert document["duties"]["applicant"] and document["security"]["confidentiality"]
    assert set(agreement["problems"]) == {
        "the applicant has not signed",
        "the operator has not signed",
    }
    again = platform.call("approver", "POST", f"/applications/{application}/agreement").json()
    assert again["id"] == agreement["id"]  # one agreement per application

    text = platform.call("reviewer", "GET", f"/agreements/{agreement['id']}/document").content
    assert hashlib.sha256(text).hexdigest() == agreement["sha256"]
    assert text == canonical.encode(document)

    assert (
        platform.call("reviewer", "POST", f"/agreements/{agreement['id']}/signature").status_code
        == 403
    )
    signed = platform.call("applicant", "POST", f"/agreements/{agreement['id']}/signature")
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "awaiting"
    assert signed.json()["problems"] == ["the operator has not signed"]
    twice = platform.call("applicant", "POST", f"/agreements/{agreement['id']}/signature")
    assert twice.status_code == 409
    both = platform.call("approver", "POST", f"/agreements/{agreement['id']}/signature").json()
    assert both["status"] == "signed" and both["problems"] == []

    # Anyone with the ledger checks the signatures: the keys are the ones it published.
    keys = published_keys(platform)
    assert signature_problems(document, both["signatures"], keys) == []
    assert {s["key_id"] for s in both["signatures"].values()} <= set(keys)
    tampered = json.loads(json.dumps(document))
    tampered["period"]["ends_on"] = "2030-10-14"
    assert "the applicant's signature does not hold" in signature_problems(
        tampered, both["signatures"], keys
    )
    assert "was not published" in " ".join(signature_problems(document, both["signatures"], {}))
    sign_entries = [e for e in platform.entries() if e.get("action") == "agreement.sign"]
    assert [e["detail"]["party"] for e in sign_entries] == ["applicant", "operator"]
    assert all(e["detail"]["sha256"] == agreement["sha256"] for e in sign_entries)

    pdf = platform.call("applicant", "GET", f"/agreements/{agreement['id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    again_pdf = platform.call("applicant", "GET", f"/agreements/{agreement['id']}/pdf").content
    assert again_pdf == pdf.content  # the same agreement always makes the same PDF


def test_only_approved_applications_get_agreements_and_only_parties_see_them(
    platform: Platform,
) -> None:
    dataset = published(platform)
    waiting = submitted(platform, dataset)
    early = platform.call("applicant", "POST", f"/applications/{waiting}/agreement")
    assert early.status_code == 409 and "not approved" in early.json()["detail"]
    application = approved(platform, dataset)
    agreement = platform.call("approver", "POST", f"/applications/{application}/agreement")
    assert agreement.status_code == 200, agreement.text
    platform.user("other.applicant", "application_unit", "applicant")
    identity = platform.services.identity
    other = identity.create_organization(
        platform.admin,
        kind=test_catalog.OrganizationType.APPLICATION_UNIT,
        name="青岛另一科技有限公司",
        credit_code=test_catalog.credit_code(7),
    ).id
    platform.organizations["stranger_unit"] = other
    platform.user("stranger", "stranger_unit", "applicant")
    found = platform.call("stranger", "GET", f"/agreements/{agreement.json()['id']}")
    assert found.status_code == 404
    signed = platform.call("stranger", "POST", f"/agreements/{agreement.json()['id']}/signature")
    assert signed.status_code == 404
    assert form(dataset)["title"]  # the same form the application was made with

    # Numbers follow the highest one of the year, gaps and all.
    with platform.services.sessions.begin() as session:
        row = session.get(Agreement, agreement.json()["id"])
        assert row is not None and row.number == "SBX-2026-00001"
        row.number = "SBX-2026-00007"
    second = approved(platform, dataset)
    made = platform.call("applicant", "POST", f"/applications/{second}/agreement").json()
    assert made["number"] == "SBX-2026-00008"


def signed(platform: Platform, application: str) -> dict[str, Any]:
    made = platform.call("applicant", "POST", f"/applications/{application}/agreement").json()
    for party in ("applicant", "approver"):
        done = platform.call(party, "POST", f"/agreements/{made['id']}/signature")
        assert done.status_code == 200, done.text
    return dict(platform.call("approver", "GET", f"/agreements/{made['id']}").json())


def grant_body(dataset: str, applicant: str, **view: Any) -> dict[str, Any]:
    record = {
        "dataset_id": dataset,
        "name": "visits",
        "kind": "record",
        "fields": [
            {"column": "district", "treatment": "generalize", "params": {"to": "district"}},
            {"column": "visit_date", "treatment": "generalize", "params": {"to": "month"}},
        ],
        "k": 5,
    }
    record.update(view)
    aggregate = {
        "dataset_id": dataset,
        "name": "cost_by_district",
        "kind": "aggregate",
        "fields": [{"column": "district", "treatment": "generalize", "params": {"to": "district"}}],
        "measures": ["cost"],
    }
    return {"grant_id": "clinic-2026", "members": [applicant], "views": [record, aggregate]}


def test_a_signed_agreement_becomes_a_grant_on_the_views_it_allows(platform: Platform) -> None:
    dataset = published(platform)
    uploaded = platform.call(
        "provider_steward",
        "POST",
        f"/datasets/{dataset}/versions?filename=visits.csv",
        content=test_catalog.visits_csv(200),
    )
    assert uploaded.status_code == 201, uploaded.text
    application = approved(platform, dataset)
    applicant = platform.call("applicant", "GET", "/me").json()["id"]
    made = platform.call("applicant", "POST", f"/applications/{application}/agreement").json()
    early = platform.call(
        "approver", "POST", f"/agreements/{made['id']}/grant", json=grant_body(dataset, applicant)
    )
    assert early.status_code == 409  # not signed yet
    agreement = signed(platform, application)

    outside = grant_body(
        dataset,
        applicant,
        fields=[{"column": "id_number", "treatment": "keep"}],
    )
    refused = platform.call(
        "approver", "POST", f"/agreements/{agreement['id']}/grant", json=outside
    )
    assert refused.status_code == 422 and "id_number" in refused.json()["detail"]
    wrong = grant_body(
        dataset,
        applicant,
        fields=[{"column": "district", "treatment": "generalize", "params": {"to": "year"}}],
    )
    refused = platform.call("approver", "POST", f"/agreements/{agreement['id']}/grant", json=wrong)
    assert refused.status_code == 422 and "the data refuses it" in refused.json()["detail"]
    loose = grant_body(dataset, applicant, fields=[{"column": "district", "treatment": "keep"}])
    refused = platform.call("approver", "POST", f"/agreements/{agreement['id']}/grant", json=loose)
    assert refused.status_code == 422 and "not keep" in refused.json()["detail"]
    assert (
        platform.call(
            "applicant",
            "POST",
            f"/agreements/{agreement['id']}/grant",
            json=grant_body(dataset, applicant),
        ).status_code
        == 403
    )

    made_grant = platform.call(
        "approver",
        "POST",
        f"/agreements/{agreement['id']}/grant",
        json=grant_body(dataset, applicant),
    )
    assert made_grant.status_code == 201, made_grant.text
    grant = made_grant.json()
    assert grant["agreement_id"] == agreement["id"]
    assert grant["members"] == [applicant]
    # to the end of the period's last day, China time
    assert datetime.fromisoformat(grant["ends_at"]) == datetime(2027, 10, 14, 16, tzinfo=UTC)
    grants = platform.services.agreement_grants
    assert grants is not None
    views = grants.views_root / "clinic-2026"
    assert sorted(p.name for p in views.iterdir()) == [
        "cost_by_district.manifest.json",
        "cost_by_district.parquet",
        "visits.manifest.json",
        "visits.parquet",
    ]
    created = [e for e in platform.entries() if e.get("action") == "grant.create"]
    assert created[-1]["detail"]["agreement_sha256"] == agreement["sha256"]
    built = [e for e in platform.entries() if e.get("action") == "view.build"]
    assert len(built) == 2
    again = platform.call(
        "approver",
        "POST",
        f"/agreements/{agreement['id']}/grant",
        json=grant_body(dataset, applicant),
    )
    assert again.status_code == 409
