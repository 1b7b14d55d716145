"""Agreements through the API: made from an approved application, signed by the
application unit and the operator with their organizations' keys, and verifiable against
the keys the ledger published."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from audit import canonical
from gateway.agreements.document import signature_problems
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
    made = platform.call("applicant", "POST", f"/applications/{application}/agreement")
    assert made.status_code == 200, made.text
    agreement: dict[str, Any] = made.json()
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
