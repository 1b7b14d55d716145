"""Evidence bundles through the API, over a real platform: a regulator takes a grant's
evidence — its agreement, its released export's bundle, every entry with its proof — and
it verifies with the standalone verifier in another process, against the ledger too.
Bad scopes are refused with a reason; nobody but regulators makes them, and each reads
only their own."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from audit.evidence import verify_evidence
from gateway.catalog.service import CHINA
from gateway.db.models import OrganizationType
from tests.conftest import REPO_ROOT
from tests.integration import test_catalog
from tests.integration.test_catalog import Platform
from tests.integration.test_exports import decide, export, granted, table
from tests.integration.test_reports import add_organization

# The catalog tests' platform, on SQLite: scopes are read from the trail index, the same
# whichever database the platform runs on.
platform = test_catalog.platform
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def released(platform: Platform) -> str:
    """A grant with one export, reviewed, approved and released; the export's id."""
    token = granted(platform)
    found = export(platform, token, {"tables/visits.csv": table([("市南区", 200)])})
    assert decide(platform, "reviewer", found["id"], True).status_code == 200
    last = decide(platform, "approver", found["id"], True)
    assert last.status_code == 200 and last.json()["status"] == "released", last.text
    return str(found["id"])


def test_a_regulator_takes_evidence_that_verifies_offline_and_bad_scopes_are_refused(
    platform: Platform, tmp_path: Path
) -> None:
    export_id = released(platform)
    add_organization(platform, "regulator", OrganizationType.REGULATOR, 5)
    platform.user("regulator", "regulator", "regulator")
    platform.user("regulator2", "regulator", "regulator")

    made = platform.call("regulator", "POST", "/evidence", json={"grant": "clinic-2026"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["scope"] == {"grant": "clinic-2026"} and body["missing"] == []
    assert body["entries"] > 20 and body["documents"] >= 2
    assert [b["id"] for b in platform.call("regulator", "GET", "/evidence").json()] == [body["id"]]
    assert platform.call("regulator", "GET", f"/evidence/{body['id']}").json() == body
    assert platform.call("regulator2", "GET", "/evidence").json() == []  # each their own
    assert platform.call("regulator2", "GET", f"/evidence/{body['id']}").status_code == 404

    download = platform.call("regulator", "GET", body["download"].removeprefix("/api/v1"))
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert hashlib.sha256(download.content).hexdigest() == body["sha256"]
    bundle = tmp_path / "evidence.zip"
    bundle.write_bytes(download.content)

    ledger = platform.services.ledger
    first_key = ledger.keychain().records[0].key_id
    result = subprocess.run(
        [sys.executable, "-m", "audit.evidence", str(bundle), "--trusted-key", first_key]
        + ["--ledger", str(ledger.path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"first key {first_key} is pinned" in result.stdout
    assert f"exports/{export_id}.zip  release-bundle" in result.stdout
    assert "agreements/SBX-" in result.stdout

    report = verify_evidence(bundle)
    assert report.manifest is not None
    entries = {seq for seq, _ in report.manifest["entries"]}
    actions = {e["seq"]: (e["action"], e["object"]) for e in platform.entries()}
    named = {actions[seq] for seq in entries if seq in actions}
    assert ("grant.create", "grant:clinic-2026") in named
    assert {a for a, _ in named} >= {"agreement.create", "export.request", "export.release"}
    documents = {d["name"]: d for d in report.manifest["documents"]}
    assert documents[f"exports/{export_id}.zip"]["kind"] == "release-bundle"
    [agreement] = [d for d in documents.values() if d["name"].startswith("agreements/")]
    [letter] = [d for d in documents.values() if d["name"].startswith("applications/")]
    assert letter["name"].endswith(".pdf") and actions[letter["seq"]][0] == "application.attach"
    assert actions[agreement["seq"]][0] in ("agreement.create", "agreement.sign", "grant.create")

    recorded = [e for e in platform.entries() if e["object"] == f"evidence:{body['id']}"]
    assert [e["action"] for e in recorded] == ["evidence.create", "evidence.download"]
    create = recorded[0]["detail"]
    assert (create["sha256"], create["entries"], create["scope"]) == (
        body["sha256"],
        body["entries"],
        {"grant": "clinic-2026"},
    )
    scopes_are_checked_and_only_regulators_take_evidence(platform)


def scopes_are_checked_and_only_regulators_take_evidence(platform: Platform) -> None:
    unit = platform.organizations["application_unit"]
    before = platform.services.ledger.size
    for body, code, reason in (
        ({}, 422, "give an organization, a grant or a period"),
        ({"organization": unit, "grant": "clinic-2026"}, 422, "not both"),
        ({"grant": "no-such-grant"}, 404, "no grant"),
        ({"organization": "f" * 32}, 404, "no organization"),
        ({"since": "2026-13-01"}, 422, "since is not a day"),
        ({"since": "2026-12-01", "until": "2026-11-01"}, 422, "since must be before until"),
        ({"since": "2200-01-01"}, 422, "no entry in this scope"),
        ({"grant": "../etc"}, 422, "pattern"),
        ({"grant": "clinic-2026", "everything": True}, 422, "Extra inputs"),
    ):
        refused = platform.call("regulator", "POST", "/evidence", json=body)
        assert refused.status_code == code, (body, refused.text)
        assert reason in str(refused.json()["detail"]), (body, refused.text)
    assert platform.services.ledger.size == before  # nothing recorded for bad input
    assert (
        platform.call("applicant", "POST", "/evidence", json={"grant": "clinic-2026"}).status_code
        == 403
    )
    assert platform.call("approver", "GET", "/evidence").status_code == 403
    assert platform.call("regulator", "GET", "/evidence/no-such-bundle").status_code == 404
    assert platform.call("regulator", "GET", "/evidence/no-such/bundle").status_code == 404

    evidence = platform.services.evidence
    assert evidence is not None
    evidence.max_entries = 5
    too_large = platform.call("regulator", "POST", "/evidence", json={"organization": unit})
    assert too_large.status_code == 422
    assert "more than 5 entries: narrow it" in too_large.json()["detail"]
    evidence.max_entries = 1_000_000
    today = datetime.now(CHINA).date()  # the ledger's entries carry the real time
    # an organization within a period: the unit's people, what was done about it and the
    # histories of its applications and grants
    within = platform.call(
        "regulator",
        "POST",
        "/evidence",
        json={"organization": unit, "since": str(today - timedelta(days=1)), "until": str(today)},
    )
    assert within.status_code == 201, within.text
    path = evidence.folder / f"{within.json()['id']}.zip"
    report = verify_evidence(path)
    assert report.ok, report.problems
    assert report.manifest is not None and report.manifest["scope"]["organization"] == unit
    assert any(d["name"].startswith("applications/") for d in report.manifest["documents"])
    # with the operator's decisions on its exports, which name the export, not the unit
    held = {seq for seq, _ in report.manifest["entries"]}
    decisions = {
        e["seq"] for e in platform.entries() if e["action"] in ("export.review", "export.approve")
    }
    assert decisions and decisions <= held
