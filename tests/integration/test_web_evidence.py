"""Evidence bundles in the console, over a real platform: a regulator takes a grant's
evidence through the form (from the grant's timeline), sees it listed, downloads it and
it verifies offline; a bad scope is refused with the reason, the form kept; an applicant
gets the 403 page; the page speaks Chinese and English."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from audit.evidencecheck import verify_evidence
from gateway.db.models import OrganizationType
from tests.integration import test_catalog
from tests.integration.test_catalog import Platform
from tests.integration.test_evidence_api import released
from tests.integration.test_reports import add_organization
from tests.webconsole import NEW_PASSWORD, Console, form_token

platform = test_catalog.platform
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def person(platform: Platform, name: str, organization: str, role: str) -> None:
    """A console user with :data:`NEW_PASSWORD`."""
    identity = platform.services.identity
    account, one_time = identity.create_user(
        platform.admin,
        organization_id=platform.organizations[organization],
        username=name,
        display_name=name,
        roles=(role,),
    )
    identity.set_password(account.id, one_time, NEW_PASSWORD)


def signed_in(console: Console, name: str) -> str:
    """Sign in as ``name``; the session's CSRF token."""
    console.client.cookies.delete("__Host-sbx_session")
    home = console.sign_in(name, NEW_PASSWORD)
    assert home.status_code == 200 and home.url.path == "/", home.text
    return form_token(home)


def test_a_regulator_takes_evidence_in_the_console(platform: Platform, tmp_path: Path) -> None:
    released(platform)
    add_organization(platform, "regulator", OrganizationType.REGULATOR, 5)
    person(platform, "chen", "regulator", "regulator")
    person(platform, "wang", "application_unit", "applicant")
    first_key = platform.services.ledger.keychain().records[0].key_id
    with TestClient(platform.client.app, base_url="https://testserver") as client:
        console = Console(client, platform.services, "")
        signed_in(console, "chen")
        client.cookies.set("sbx_lang", "en")
        timeline = client.get("/trail/history/grant/clinic-2026")
        assert timeline.status_code == 200, timeline.text
        link = re.search(
            r'href="(/evidence\?grant=[^"]+)" data-testid="take-evidence"', timeline.text
        )
        assert link, timeline.text
        page = client.get(link.group(1))
        assert page.status_code == 200, page.text
        assert 'href="/evidence">Evidence</a>' in page.text  # in the navigation
        assert 'name="grant" value="clinic-2026"' in page.text
        assert "You have not taken evidence yet." in page.text
        token = form_token(page)

        # Refused: nothing chosen, both chosen, a bad day, days reversed, no such grant.
        unit = platform.organizations["application_unit"]
        before = platform.services.ledger.size
        for values, code, reason in (
            ({}, 422, "give an organization, a grant or a period"),
            ({"organization": unit, "grant": "clinic-2026"}, 422, "not both"),
            ({"grant": "clinic-2026", "since": "2026-13-01"}, 422, "is not a date written"),
            ({"since": "2026-12-01", "until": "2026-11-01"}, 422, "The first day is after"),
            ({"grant": "no-such-grant"}, 404, "no grant"),
        ):
            refused = client.post("/evidence", data={"csrf_token": token, **values})
            assert refused.status_code == code, (values, refused.text)
            assert reason in refused.text, (values, refused.text)
            for name, value in values.items():
                if name != "organization":
                    assert f'name="{name}" value="{value}"' in refused.text
                else:
                    assert f'<option value="{value}" selected>' in refused.text
        assert platform.services.ledger.size == before  # nothing recorded for bad input
        forged = client.post("/evidence", data={"csrf_token": "forged", "grant": "clinic-2026"})
        assert forged.status_code == 403

        made = client.post("/evidence", data={"csrf_token": token, "grant": "clinic-2026"})
        assert made.status_code == 200 and made.url.path == "/evidence", made.text
        assert "The evidence bundle was made" in made.text
        [bundle_id] = re.findall(r'data-bundle="([^"]+)"', made.text)
        assert "grant clinic-2026" in made.text
        assert f"python -m audit.evidence evidence-&lt;id&gt;.zip --trusted-key {first_key}" in (
            made.text
        )
        sha256 = re.search(r'data-testid="sha256">([0-9a-f]{64})<', made.text)
        assert sha256

        download = client.get(f"/evidence/{bundle_id}/bundle")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        assert hashlib.sha256(download.content).hexdigest() == sha256.group(1)
        path = tmp_path / f"evidence-{bundle_id}.zip"
        path.write_bytes(download.content)
        report = verify_evidence(path, trusted_keys=[first_key])
        assert report.ok, report
        assert report.manifest is not None and report.manifest["scope"] == {"grant": "clinic-2026"}
        recorded = [e for e in platform.entries() if e["object"] == f"evidence:{bundle_id}"]
        assert [e["action"] for e in recorded] == ["evidence.create", "evidence.download"]
        assert client.get("/evidence/no-such-bundle/bundle").status_code == 404

        client.cookies.delete("sbx_lang")
        chinese = client.get("/evidence")
        assert chinese.status_code == 200
        assert 'href="/evidence">证据</a>' in chinese.text and "<h1>证据包</h1>" in chinese.text
        assert "调取证据" in chinese.text and "授权 clinic-2026" in chinese.text

        wang = signed_in(console, "wang")
        assert 'href="/evidence"' not in client.get("/").text
        assert client.get("/evidence").status_code == 403
        assert client.get(f"/evidence/{bundle_id}/bundle").status_code == 403
        taken = client.post("/evidence", data={"csrf_token": wang, "grant": "clinic-2026"})
        assert taken.status_code == 403
