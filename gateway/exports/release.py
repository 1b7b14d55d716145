"""Releasing an approved export: its provenance, the signed manifest, and the tables kept
for comparing later exports with.

:func:`prepare_release` writes the provenance files and makes the manifest (outside any
write: it hashes every file); :func:`sign_release` signs it for the approver's
organization and records ``export.release`` in the write that records the last
approval; :func:`keep_tables` keeps the released tables (read by :func:`prepare_release`
in the airlock's comparable form), under each dataset the grant's views came from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import canonical
from audit.bundle import DOMAIN_RELEASE, bundle_manifest
from gateway.agreements.keys import OrganizationKeys
from gateway.authz import Actor
from gateway.catalog.service import CHINA
from gateway.db.models import (
    Agreement,
    Export,
    Grant,
    Organization,
    ReleasedTable,
    SandboxExecution,
    SandboxSession,
)
from gateway.exports.context import GrantViews
from gateway.exports.snapshots import ReviewSnapshot, export_snapshot
from gateway.identity.model import _entry, _own_organization
from sandbox.airlock import AirlockRules, released_tables
from sandbox.airlock import ReleasedTable as ComparableTable

Record = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PreparedRelease:
    manifest: dict[str, Any]  # all but the signature
    files: tuple[tuple[str, Path], ...]  # (name in the bundle, where it is)
    decision: ReviewSnapshot  # the last approval, as the manifest names it
    tables: tuple[ComparableTable, ...]  # the released tables, for differencing


def _code(session: Session, row: Export, grant: Grant, until: Any) -> list[dict[str, Any]]:
    """Every cell, input and command the requester ran in the grant's sandbox up to the
    request (the ``sandbox.execute`` entries carry the same SHA-256)."""
    cells = session.scalars(
        select(SandboxExecution)
        .join(SandboxSession, SandboxSession.id == SandboxExecution.session_id)
        .where(
            SandboxExecution.grant_id == grant.id,
            SandboxSession.user_id == row.requested_by.removeprefix("user:"),
            SandboxExecution.recorded_at <= until,
        )
        .order_by(SandboxExecution.id)
    )
    return [
        {
            "session": cell.session_id,
            "kind": cell.kind,
            "sha256": cell.sha256,
            "recorded_at": cell.recorded_at.isoformat(),
            "code": cell.code,
        }
        for cell in cells
    ]


def prepare_release(
    session: Session,
    row: Export,
    grant: Grant,
    decision: ReviewSnapshot,
    *,
    views: GrantViews,
    home: Path,
    rules: AirlockRules | None,
) -> PreparedRelease:
    """Write ``home/provenance``, make the manifest of ``row``'s release, which
    ``decision`` (the last approval) is about to make, and read its tables in the
    airlock's comparable form with ``rules`` (none without)."""
    provenance = home / "provenance"
    shutil.rmtree(provenance, ignore_errors=True)
    (provenance / "views").mkdir(mode=0o700, parents=True)
    snapshot = export_snapshot(session, row)
    organization = session.get(Organization, row.organization_id)
    agreement = session.get(Agreement, grant.agreement_id) if grant.agreement_id else None
    submitted = snapshot.submitted_at or decision.at
    files = [(f"results/{f.name}", home / "results" / f.name) for f in snapshot.files]
    for path in views.manifests:
        shutil.copyfile(path, provenance / "views" / path.name)
        files.append((f"provenance/views/{path.name}", provenance / "views" / path.name))
    written: dict[str, Any] = {
        "checks.json": snapshot.report or {},
        "code.json": _code(session, row, grant, submitted),
    }
    if agreement is not None:
        written["agreement.json"] = json.loads(agreement.document)
    for name, content in written.items():
        (provenance / name).write_bytes(canonical.encode(content))
        files.append((f"provenance/{name}", provenance / name))
    report = snapshot.report or {}
    body = {
        "export": {
            "id": snapshot.id,
            "description": snapshot.description,
            "requested_by": snapshot.requested_by,
            "requested_at": snapshot.requested_at.isoformat(),
            "submitted_at": submitted.isoformat(),
        },
        "grant": {
            "id": grant.id,
            "title": grant.title,
            "organization": row.organization_id,
            "organization_name": organization.name if organization else "",
        },
        "agreement": (
            {"id": agreement.id, "number": agreement.number, "sha256": agreement.sha256}
            if agreement is not None
            else {}
        ),
        "datasets": list(views.datasets),
        "checks": {
            "level": snapshot.level,
            "policy_digest": str(report.get("policy_digest", "")),
            "passed": bool(report.get("passed")),
            "findings": snapshot.findings,
        },
        "risk": str(decision.risk),
        "reviews": [review.to_dict() for review in (*snapshot.reviews, decision)],
        "released_at": decision.at.isoformat(),
        "released_by": decision.actor,
    }
    results = [path for name, path in files if name.startswith("results/")]
    tables = released_tables(results, root=home / "results", rules=rules) if rules else ()
    return PreparedRelease(bundle_manifest(body, files), tuple(files), decision, tables)


def sign_release(
    session: Session,
    keys: OrganizationKeys,
    record: Record,
    actor: Actor,
    row: Export,
    prepared: PreparedRelease,
) -> None:
    """Sign the manifest for the actor's organization (its key published first if need
    be), keep it and the signature on ``row``, and record ``export.release``."""
    manifest = prepared.manifest
    encoded = canonical.encode(manifest)
    digest = hashlib.sha256(encoded).hexdigest()
    own = _own_organization(actor)
    signature = keys.sign(session, own, DOMAIN_RELEASE, manifest, actor=actor.user)
    row.manifest = encoded.decode()
    row.manifest_sha256 = digest
    row.signature = json.dumps(
        {
            "key_id": signature.key_id,
            "public_key": signature.public_key,
            "signature": signature.value,
        }
    )
    record(
        _entry(
            actor.user,
            "export.release",
            f"export:{row.id}",
            "ok",
            {
                "grant": row.grant_id,
                "manifest_sha256": digest,
                "key_id": signature.key_id,
                "organization": own,
                "signature": signature.value,
                "files": [{"name": f["name"], "sha256": f["sha256"]} for f in manifest["files"]],
            },
        )
    )


def keep_tables(session: Session, row: Export, prepared: PreparedRelease) -> None:
    """Keep the release's tables under each dataset of its grant, each named only by the
    day it was released (the reasons a later export reads never show another unit's
    file names)."""
    released_on = prepared.decision.at.astimezone(CHINA).date().isoformat()
    datasets = sorted({str(item["dataset"]) for item in prepared.manifest["datasets"]})
    for table in prepared.tables:
        named = replace(table, source=f"a table released on {released_on}")
        text = canonical.encode(named.to_dict()).decode()
        for dataset_id in datasets:
            session.add(
                ReleasedTable(
                    export_id=row.id,
                    dataset_id=dataset_id,
                    organization_id=row.organization_id,
                    table=text,
                    released_at=prepared.decision.at,
                )
            )
