"""Export requests through the API: the sandbox's server announces and sends workspace
files with the session's token, the airlock checks them, a reviewer and approvers decide
(two approvers when the risk is high, nobody of the applicant's organization), and the
release is a signed bundle that verifies offline and against the ledger. A later export
that differs from an earlier release by a small group is stopped."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.bundle import ledger_problems, verify_bundle
from tests.integration import test_catalog
from tests.integration.test_agreements import grant_body, signed
from tests.integration.test_applications import approved
from tests.integration.test_catalog import Platform, published

platform = test_catalog.platform
DURING = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # within the agreement's period


# The clinic's visits with the patients' names: a direct identifier no pattern knows.
PATIENTS = {
    **test_catalog.ENTRY,
    "fields": [
        *test_catalog.ENTRY["fields"],
        {
            "name": "patient",
            "type": "string",
            "description": "患者",
            "sensitivity": "direct_identifier",
        },
    ],
}
NAMES = ["王秀英", "李建国", "张桂兰", "刘志强"]


def patients_csv(rows: int = 200) -> bytes:
    lines = test_catalog.visits_csv(rows).decode().splitlines()
    named = [lines[0] + ",patient"] + [
        f"{line},{NAMES[n % 4]}{n}" for n, line in enumerate(lines[1:])
    ]
    return ("\n".join(named) + "\n").encode()


def granted(platform: Platform, *, names: bool = False) -> str:
    """A grant made from a signed agreement, its views built; a session's token in it.
    ``names``: the dataset holds the patients' names too."""
    dataset = published(platform, PATIENTS if names else None)
    uploaded = platform.call(
        "provider_steward",
        "POST",
        f"/datasets/{dataset}/versions?filename=visits.csv",
        content=patients_csv() if names else test_catalog.visits_csv(200),
    )
    assert uploaded.status_code == 201, uploaded.text
    agreement = signed(platform, approved(platform, dataset))
    applicant = platform.call("applicant", "GET", "/me").json()["id"]
    sandboxes = platform.services.sandboxes
    assert sandboxes is not None
    sandboxes.clock = lambda: DURING
    made = platform.call(
        "approver",
        "POST",
        f"/agreements/{agreement['id']}/grant",
        json=grant_body(dataset, applicant),
    )
    assert made.status_code == 201, made.text
    return sandboxes.start_session("applicant", "clinic-2026").token


def table(rows: list[tuple[str, int]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["district", "count"])
    writer.writerows(rows)
    return out.getvalue().encode()


def export(
    platform: Platform, token: str, files: dict[str, bytes], description: str = "各区就诊人次"
) -> dict[str, Any]:
    """Announce, send and submit ``files`` as the sandbox's server does."""
    bearer = {"Authorization": f"Bearer {token}"}
    announced = [
        {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    made = platform.client.post(
        "/api/v1/sandbox/exports",
        json={"description": description, "files": announced},
        headers=bearer,
    )
    assert made.status_code == 201, made.text
    export_id = made.json()["id"]
    for n, data in enumerate(files.values()):
        sent = platform.client.put(
            f"/api/v1/sandbox/exports/{export_id}/files/{n}", content=data, headers=bearer
        )
        assert sent.status_code == 204, sent.text
    submitted = platform.client.post(f"/api/v1/sandbox/exports/{export_id}/submit", headers=bearer)
    assert submitted.status_code == 200, submitted.text
    return dict(submitted.json())


def decide(platform: Platform, who: str, export_id: str, approve: bool, **extra: Any) -> Any:
    body = {"approve": approve, "reasons": "汇总表，单元格均大于阈值", **extra}
    return platform.call(who, "POST", f"/exports/{export_id}/decision", json=body)


def test_an_export_is_checked_reviewed_approved_twice_and_released_as_a_signed_bundle(
    platform: Platform, tmp_path: Path
) -> None:
    token = granted(platform)
    platform.user("approver2", "operator", "approver")
    platform.user("colleague", "application_unit", "applicant")

    found = export(platform, token, {"tables/visits.csv": table([("市南区", 200)])})
    assert found["status"] == "review", found["report"]
    assert found["blocking"] == 0 and found["url"] == f"/exports/{found['id']}"
    export_id = found["id"]
    # The applicant's colleagues see it; the reviewer reads its files.
    assert platform.call("colleague", "GET", f"/exports/{export_id}").status_code == 200
    read = platform.call("reviewer", "GET", f"/exports/{export_id}/files/0")
    assert read.status_code == 200 and read.content == table([("市南区", 200)])
    assert [e["id"] for e in platform.call("reviewer", "GET", "/exports/queue").json()] == [
        export_id
    ]
    assert platform.call("approver", "GET", "/exports/queue").json() == []  # not its step yet

    assert decide(platform, "colleague", export_id, True).status_code == 403  # not a reviewer
    assert decide(platform, "approver", export_id, True).status_code == 403  # not its step
    opinion = decide(platform, "reviewer", export_id, True, risk="high")
    assert opinion.status_code == 200, opinion.text
    assert opinion.json()["status"] == "approval" and opinion.json()["risk"] == "high"
    assert decide(platform, "reviewer", export_id, True).status_code == 403  # not an approver
    first = decide(platform, "approver", export_id, True)
    assert first.status_code == 200 and first.json()["status"] == "second_approval"
    assert decide(platform, "approver", export_id, True).status_code == 403  # another person
    early = platform.call("applicant", "GET", f"/exports/{export_id}/bundle")
    assert early.status_code == 409
    last = decide(platform, "approver2", export_id, True)
    assert last.status_code == 200, last.text
    released = last.json()
    assert released["status"] == "released" and released["manifest_sha256"]
    assert [r["stage"] for r in released["reviews"]] == ["review", "approval", "second_approval"]

    bundle = platform.call("applicant", "GET", f"/exports/{export_id}/bundle")
    assert bundle.status_code == 200
    path = tmp_path / "release.zip"
    path.write_bytes(bundle.content)
    report = verify_bundle(path)
    assert report.ok, report.problems
    assert report.manifest_sha256 == released["manifest_sha256"]
    manifest = report.manifest
    assert manifest is not None
    names = {item["name"] for item in manifest["files"]}
    assert {"results/tables/visits.csv", "provenance/checks.json", "provenance/code.json"} <= names
    assert any(name.startswith("provenance/views/") for name in names)
    assert manifest["grant"]["id"] == "clinic-2026" and manifest["agreement"]["number"]
    assert [d["dataset"] for d in manifest["datasets"]]
    assert [r["actor"] for r in manifest["reviews"]][-1].startswith("user:")
    platform.services.ledger.checkpoint()
    assert ledger_problems(platform.services.ledger.path, report).ok

    actions = [e["action"] for e in platform.entries() if e["object"] == f"export:{export_id}"]
    assert actions[:2] == ["export.request", "export.submit"]
    assert {"export.review", "export.approve", "export.release", "export.download"} <= set(actions)

    # Tampered, the bundle no longer verifies.
    data = bytearray(path.read_bytes())
    at = data.find("市南区".encode())
    data[at + 1] ^= 1
    path.write_bytes(bytes(data))
    assert not verify_bundle(path).ok


def test_raw_records_are_blocked_and_a_difference_from_an_earlier_release_is_caught(
    platform: Platform,
) -> None:
    token = granted(platform, names=True)
    blocked = export(platform, token, {"copy.csv": test_catalog.visits_csv(20)})
    assert blocked["status"] == "blocked", blocked["report"]
    assert "identifiers" in {f["check"] for f in blocked["report"]["findings"]}
    assert decide(platform, "reviewer", blocked["id"], True).status_code == 409
    # Raw records no view shows (the cost is aggregated only), re-ordered, without any
    # identifier: the index of the raw data finds them.
    raw = list(csv.DictReader(io.StringIO(test_catalog.visits_csv(200).decode())))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["费用", "诊断", "日期"])
    writer.writerows((row["cost"], row["diagnosis"], row["visit_date"]) for row in raw[::-1])
    copied = export(platform, token, {"costs.csv": out.getvalue().encode()})
    assert copied["status"] == "blocked", copied["report"]
    assert "row_level" in {f["check"] for f in copied["report"]["findings"]}
    assert any(e["action"] == "airlock.index" for e in platform.entries())
    # A patient's name from the raw data, which no view holds, in a note.
    named = export(platform, token, {"note.txt": "随访对象：李建国5，复诊两次。\n".encode()})
    assert named["status"] == "blocked", named["report"]
    assert "李建国5" not in json.dumps(named["report"], ensure_ascii=False)
    read = [e for e in platform.entries() if e["action"] == "airlock.values"]
    assert read and read[-1]["detail"]["columns"] == ["patient"]

    first = export(platform, token, {"visits.csv": table([("市南区", 200)])})
    for who in ("reviewer", "approver"):
        assert decide(platform, who, first["id"], True).status_code == 200
    assert platform.call("applicant", "GET", f"/exports/{first['id']}").json()["status"] == (
        "released"
    )
    later = export(platform, token, {"again.csv": table([("市南区", 197)])})
    assert later["status"] == "blocked"
    assert "differencing" in {f["check"] for f in later["report"]["findings"]}
    submitted = [
        e for e in platform.entries() if e["action"] == "export.submit" and e["outcome"] == "ok"
    ]
    # the record says why, never the values (197 alone, not inside an id or a digest)
    assert not re.search(r"(?<![0-9a-f])197(?![0-9a-f])", json.dumps(submitted))


def test_what_the_sandbox_sends_is_checked(platform: Platform) -> None:
    token = granted(platform)
    data = table([("市南区", 200)])
    bearer = {"Authorization": f"Bearer {token}"}
    announced = {"name": "t.csv", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def post(path: str, body: Any = None, headers: dict[str, str] = bearer) -> Any:
        return platform.client.post(f"/api/v1/sandbox/exports{path}", json=body, headers=headers)

    stranger = post("", {"description": "表", "files": [announced]}, {"Authorization": "Bearer x"})
    assert stranger.status_code == 401
    climbing = post("", {"description": "表", "files": [{**announced, "name": "../t.csv"}]})
    assert climbing.status_code == 422 and "." in climbing.json()["detail"]
    twice = post("", {"description": "表", "files": [announced, announced]})
    assert twice.status_code == 422 and "twice" in twice.json()["detail"]
    made = post("", {"description": "表", "files": [announced]})
    assert made.status_code == 201
    export_id = made.json()["id"]
    early = post(f"/{export_id}/submit")
    assert early.status_code == 409 and "not been sent" in early.json()["detail"]
    wrong = platform.client.put(
        f"/api/v1/sandbox/exports/{export_id}/files/0", content=data[:-1] + b"9", headers=bearer
    )
    assert wrong.status_code == 422 and "not the file announced" in wrong.json()["detail"]
    assert platform.call("reviewer", "GET", f"/exports/{export_id}").status_code == 404  # unsent

    suspended = platform.call(
        "approver", "POST", "/grants/clinic-2026/suspend", json={"reason": "核查"}
    )
    assert suspended.status_code == 200, suspended.text
    stopped = post("", {"description": "表", "files": [announced]})
    assert stopped.status_code == 403 and "suspended" in stopped.json()["detail"]
