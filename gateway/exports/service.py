"""Export requests (R13): what an applicant asks to take out of a sandbox, the airlock's
automated checks, the reviewer's opinion and the approvers' decisions, and the signed
release bundle, which is the only way out.

A request comes from the sandbox's trusted server with the session's token (never from
the applicant's browser: the files must be the workspace's): :meth:`ExportService.request`
announces the files (names, sizes, SHA-256), :meth:`receive` takes each file's bytes and
checks them against the announcement, :meth:`submit` runs the airlock
(:func:`sandbox.airlock.check_export`, with the grant's level, row index, budget and
earlier releases) and routes the export: ``blocked`` if a check blocks it, otherwise to a
reviewer. People then act through :meth:`decide` (:mod:`gateway.exports.workflow`); the
last approval releases it: the bundle's manifest (files, grant, agreement, datasets and
versions, view manifests, the code the requester ran, the checks, the decisions) is
signed with the approver's organization's key and recorded as ``export.release``, and
its tables are kept for comparing later exports with. A suspended or terminated grant
stops all of it, the download of released bundles included.

Files live in ``<data_dir>/exports/<id>/``: ``results/<name>`` as received,
``provenance/`` written at release, ``bundle.zip`` written when first downloaded (it is
deterministic, from the stored manifest and signature).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from audit import canonical
from audit.bundle import write_bundle
from gateway.agreements.keys import OrganizationKeys
from gateway.applications.queries import OPERATOR_READERS
from gateway.authz import Actor, Authorizer, Denied, Target
from gateway.db.models import (
    Export,
    ExportFile,
    ExportReview,
    ExportRisk,
    ExportStatus,
    Grant,
    GrantStatus,
    SandboxSession,
)
from gateway.db.writes import WriteQueue
from gateway.exports.context import export_context, grant_views
from gateway.exports.release import PreparedRelease, keep_tables, prepare_release, sign_release
from gateway.exports.snapshots import (
    Announced,
    ExportSnapshot,
    ReviewSnapshot,
    export_snapshot,
    report_summary,
)
from gateway.exports.workflow import OPEN, STEPS, higher, next_status
from gateway.identity.model import (
    Conflict,
    IdentityError,
    NotFound,
    _entry,
    _own_organization,
    _plausible,
    clean_text,
)
from gateway.sandboxes.service import SandboxService, effective_status, use_refusal
from sandbox.airlock import AirlockPolicy, check_export
from sandbox.notebook.outbox import (
    MAX_DESCRIPTION_CHARS as MAX_DESCRIPTION,
)
from sandbox.notebook.outbox import (
    MAX_TOTAL_BYTES,
    ExportRequestError,
    check_names,
)

MAX_REASONS = 4000
MAX_LISTED = 500
BLOCK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ExportError(IdentityError):
    """A request about an export refused; the message says why."""


def _announced(files: Sequence[Announced]) -> list[Announced]:
    try:  # the rules the sandbox's outbox applies before sending
        check_names([item.name for item in files])
    except ExportRequestError as error:
        raise ExportError(error.reason) from None
    total = 0
    for item in files:
        if not 0 <= item.bytes <= MAX_TOTAL_BYTES or not _SHA256.match(item.sha256):
            raise ExportError(f"{item.name!r}: give its size and its SHA-256 in hex")
        total += item.bytes
    if total > MAX_TOTAL_BYTES:
        raise ExportError(f"an export has at most {MAX_TOTAL_BYTES >> 20} MiB in all")
    return list(files)


def _grant_refusal(grant: Grant | None, now: datetime) -> str | None:
    """Why nothing may move on an export of ``grant`` now (suspended, terminated)."""
    if grant is None:
        return "the grant is gone"
    current = effective_status(grant.status, grant.ends_at, now)
    if current in (GrantStatus.SUSPENDED, GrantStatus.TERMINATED):
        return f"the grant is {current}: its exports are stopped"
    return None


class ExportService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        sandboxes: SandboxService,
        keys: OrganizationKeys,
        policy: AirlockPolicy,
        folder: Path,
        views_root: Path,
        raw_index: Callable[[str], bytes] | None = None,
        raw_values: Callable[[str, Sequence[str]], frozenset[str]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.sandboxes = sandboxes
        self.keys = keys
        self.policy = policy
        self.folder = folder
        self.views_root = views_root
        self.raw_index = raw_index  # the view builder's index of a version's raw rows
        self.raw_values = raw_values  # and the values of its name-like fields
        self.clock = clock

    # ------------------------------------------------------------------ plumbing
    def _deny(self, actor: str, action: str, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor, action, what, "denied", {"reason": reason}))
        raise Denied(reason)

    def _home(self, export_id: str) -> Path:
        return self.folder / export_id

    def _results(self, export_id: str) -> Path:
        return self._home(export_id) / "results"

    def _visible(self, actor: Actor, row: Export) -> bool:
        if row.organization_id == _own_organization(actor):
            return True
        return bool(OPERATOR_READERS & actor.roles) and row.status is not ExportStatus.UPLOADING

    def _export(self, session: Session, actor: Actor, export_id: str) -> Export:
        row = session.get(Export, export_id) if _plausible(export_id) else None
        if row is None or not self._visible(actor, row):
            raise NotFound(f"no export {export_id[:64]!r}")
        return row

    def _own_export(self, session: Session, token: str, export_id: str, action: str) -> Export:
        """The export ``export_id`` of the session holding ``token``, while the session
        and its grant allow work."""
        found, grant = self.sandboxes.session_of_token(session, token, action)
        actor, what = f"user:{found.user_id}", f"export:{export_id[:64]}"
        row = session.get(Export, export_id) if _plausible(export_id) else None
        if row is None or row.requested_by != actor or row.grant_id != grant.id:
            raise NotFound(f"no export {export_id[:64]!r}")
        self._check_session(found, grant, actor, action, what)
        return row

    def _check_session(
        self, found: SandboxSession, grant: Grant, actor: str, action: str, what: str
    ) -> None:
        if found.ended_at is not None:
            self._deny(actor, action, what, f"the session has ended ({found.end_reason})")
        refusal = use_refusal(grant.status, grant.starts_at, grant.ends_at, self.clock())
        if refusal is not None:
            self._deny(actor, action, what, refusal)

    # ------------------------------------------------------------------ from the sandbox
    def request(self, token: str, description: str, files: Sequence[Announced]) -> ExportSnapshot:
        """Announce an export of the session's workspace files; they are sent next."""
        text = clean_text(description, "a description", MAX_DESCRIPTION, lines=True)
        announced = _announced(files)

        def apply(session: Session) -> ExportSnapshot:
            found, grant = self.sandboxes.session_of_token(session, token, "export.request")
            actor = f"user:{found.user_id}"
            self._check_session(found, grant, actor, "export.request", f"grant:{grant.id}")
            row = Export(
                grant_id=grant.id,
                organization_id=grant.organization_id,
                session_id=found.id,
                requested_by=actor,
                description=text,
                status=ExportStatus.UPLOADING,
                requested_at=self.clock(),
            )
            session.add(row)
            session.flush()
            for n, item in enumerate(announced):
                session.add(
                    ExportFile(
                        export_id=row.id, n=n, name=item.name, bytes=item.bytes, sha256=item.sha256
                    )
                )
            session.flush()
            self.record(
                _entry(
                    actor,
                    "export.request",
                    f"export:{row.id}",
                    "ok",
                    {
                        "grant": grant.id,
                        "session": found.id,
                        "files": [
                            {"name": f.name, "bytes": f.bytes, "sha256": f.sha256}
                            for f in announced
                        ],
                    },
                )
            )
            return export_snapshot(session, row)

        snapshot = self.writes.run(apply)
        self._results(snapshot.id).mkdir(mode=0o700, parents=True, exist_ok=True)
        return snapshot

    def receive(self, token: str, export_id: str, n: int, blocks: Iterable[bytes]) -> None:
        """Take file ``n`` of the export; refused unless it is what was announced."""
        with self.sessions() as session:
            row = self._own_export(session, token, export_id, "export.upload")
            if row.status is not ExportStatus.UPLOADING:
                raise Conflict(f"the export is {row.status}: its files are in")
            announced = session.get(ExportFile, (row.id, n))
            if announced is None:
                raise NotFound(f"the export has no file {n}")
            if announced.received:
                raise Conflict(f"file {n} has been received already")
            name, size, sha256 = announced.name, announced.bytes, announced.sha256
        results = self._results(export_id)
        incoming = self._home(export_id) / "incoming"  # beside the results, never among them
        incoming.mkdir(mode=0o700, exist_ok=True)
        partial = incoming / f"{n}-{secrets.token_hex(8)}"  # two sends of a file never mix
        digest, seen = hashlib.sha256(), 0
        try:
            with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                for block in blocks:
                    seen += len(block)
                    if seen > size:
                        raise ExportError(f"file {n} is larger than the {size:,} bytes announced")
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if seen != size or digest.hexdigest() != sha256:
                raise ExportError(f"file {n} is not the file announced (size or SHA-256 differ)")
            destination = results / name
            destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)

        def apply(session: Session) -> None:
            current = session.get(ExportFile, (export_id, n))
            if current is None or current.received:
                raise Conflict(f"file {n} has been received already")
            current.received = True

        self.writes.run(apply)

    def submit(self, token: str, export_id: str) -> ExportSnapshot:
        """Run the airlock's checks over the received files and route the export."""
        with self.sessions() as session:
            row = self._own_export(session, token, export_id, "export.submit")
            if row.status is not ExportStatus.UPLOADING:
                raise Conflict(f"the export is {row.status} already")
            files = session.scalars(select(ExportFile).where(ExportFile.export_id == row.id)).all()
            missing = [f.n for f in files if not f.received]
            if missing:
                raise Conflict(f"files {', '.join(map(str, missing))} have not been sent")
            grant = session.get(Grant, row.grant_id)
            if grant is None:
                raise NotFound("the export's grant is gone")
            views = grant_views(self.views_root, grant.views)
            context = export_context(
                session,
                self.policy,
                grant_id=grant.id,
                views=views,
                index_cache=self.folder / "indexes",
                raw_index=self.raw_index,
                raw_values=self.raw_values,
            )
            paths = [self._results(row.id) / f.name for f in files]
        report = check_export(paths, context, root=self._results(export_id))
        risk = ExportRisk.HIGH if report.for_review else ExportRisk.NORMAL
        status = ExportStatus.REVIEW if report.passed else ExportStatus.BLOCKED

        def apply(session: Session) -> ExportSnapshot:
            current = session.get(Export, export_id)
            if current is None or current.status is not ExportStatus.UPLOADING:
                raise Conflict("the export has been submitted already")
            current.report = json.dumps(report.to_dict(), ensure_ascii=False)
            current.level = report.level
            current.risk = risk
            current.status = status
            current.submitted_at = self.clock()
            if status is ExportStatus.BLOCKED:
                current.decided_at = current.submitted_at
            self.record(
                _entry(
                    current.requested_by,
                    "export.submit",
                    f"export:{export_id}",
                    "ok",
                    {
                        "grant": current.grant_id,
                        "status": str(status),
                        "risk": str(risk),
                        **report_summary(report),
                    },
                )
            )
            return export_snapshot(session, current)

        return self.writes.run(apply)

    # ------------------------------------------------------------------ people
    def list_exports(
        self, actor: Actor, *, status: ExportStatus | None = None
    ) -> list[ExportSnapshot]:
        """The exports the actor may see, newest first."""
        self.authorizer.authorize(actor, "export", "read")
        with self.sessions() as session:
            query = select(Export).order_by(Export.requested_at.desc()).limit(MAX_LISTED)
            if not OPERATOR_READERS & actor.roles:
                query = query.where(Export.organization_id == _own_organization(actor))
            else:
                query = query.where(
                    or_(
                        Export.status != ExportStatus.UPLOADING,
                        Export.organization_id == _own_organization(actor),
                    )
                )
            if status is not None:
                query = query.where(Export.status == status)
            return [export_snapshot(session, row) for row in session.scalars(query)]

    def queue(self, actor: Actor) -> list[ExportSnapshot]:
        """The exports waiting for a step the actor may take, oldest first."""
        self.authorizer.authorize(actor, "export", "read")
        with self.sessions() as session:
            found = []
            rows = session.scalars(  # a suspended or terminated grant's exports wait
                select(Export)
                .join(Grant, Grant.id == Export.grant_id)
                .where(
                    Export.status.in_(list(STEPS)),
                    Grant.status.not_in((GrantStatus.SUSPENDED, GrantStatus.TERMINATED)),
                )
                .order_by(Export.submitted_at)
                .limit(MAX_LISTED)
            )
            for row in rows:
                action = STEPS[row.status][0]
                if self.authorizer.refusal(actor, "export", action, self._target(session, row)):
                    continue
                found.append(export_snapshot(session, row))
            return found

    def get(self, actor: Actor, export_id: str) -> ExportSnapshot:
        self.authorizer.authorize(actor, "export", "read")
        with self.sessions() as session:
            return export_snapshot(session, self._export(session, actor, export_id))

    def file(self, actor: Actor, export_id: str, n: int) -> tuple[str, Path]:
        """File ``n`` of the export, for whoever may see the export: its organization's
        members, the operator's reviewers and approvers, the regulators."""
        self.authorizer.authorize(actor, "export", "read")
        with self.sessions() as session:
            row = self._export(session, actor, export_id)
            found = session.get(ExportFile, (row.id, n))
            if found is None or not found.received:
                raise NotFound(f"the export has no file {n}")
            return found.name, self._results(row.id) / found.name

    def _target(self, session: Session, row: Export) -> Target:
        actors = session.scalars(
            select(ExportReview.actor).where(ExportReview.export_id == row.id)
        ).all()
        return Target(
            organization=f"org:{row.organization_id}",
            requested_by=row.requested_by,
            drafted_by=frozenset(actors),
        )

    def decide(
        self,
        actor: Actor,
        export_id: str,
        *,
        approve: bool,
        reasons: str,
        risk: ExportRisk | None = None,
    ) -> ExportSnapshot:
        """The reviewer's opinion or an approver's decision, whichever the export waits
        for; the last approval releases it."""
        what = f"export:{export_id[:64]}"
        text = clean_text(reasons, "the reasons", MAX_REASONS, lines=True)
        with self.sessions() as session:
            row = self._export(session, actor, export_id)
            if row.status not in STEPS:
                raise Conflict(f"the export is {row.status}: nobody decides on it now")
            stage, action = row.status, STEPS[row.status][0]
            reason = self.authorizer.refusal(actor, "export", action, self._target(session, row))
            if reason is None:
                reason = _grant_refusal(session.get(Grant, row.grant_id), self.clock())
            if reason is not None:
                self._deny(actor.user, f"export.{action}", what, reason)
            if stage is not ExportStatus.REVIEW and risk is not None:
                raise ExportError("the reviewer assesses the risk; approvers decide")
            level = higher(row.risk, risk)
            after = next_status(stage, approve, level)
        release = (
            self._prepare_release(actor, export_id, stage, text, level)
            if (after is ExportStatus.RELEASED)
            else None
        )

        def apply(session: Session) -> ExportSnapshot:
            current = session.get(Export, export_id)
            if current is None or current.status is not stage:
                raise Conflict("the export was decided on meanwhile; look again")
            now = release.decision.at if release is not None else self.clock()
            session.add(
                ExportReview(
                    export_id=export_id,
                    stage=stage,
                    actor=actor.user,
                    approve=approve,
                    risk=level,
                    reasons=text,
                    at=now,
                )
            )
            current.risk, current.status = level, after
            if after not in OPEN:
                current.decided_at = now
            self.record(
                _entry(
                    actor.user,
                    f"export.{action}",
                    f"export:{export_id}",
                    "ok",
                    {
                        "stage": str(stage),
                        "approve": approve,
                        "risk": str(level),
                        "reasons": text,
                        "status": str(after),
                    },
                )
            )
            if release is not None:
                sign_release(session, self.keys, self.record, actor, current, release)
                keep_tables(session, current, release)
            return export_snapshot(session, current)

        return self.writes.run(apply)

    # ------------------------------------------------------------------ release
    def _prepare_release(
        self, actor: Actor, export_id: str, stage: ExportStatus, reasons: str, risk: ExportRisk
    ) -> PreparedRelease:
        with self.sessions() as session:
            row = session.get(Export, export_id)
            grant = session.get(Grant, row.grant_id) if row is not None else None
            if row is None or grant is None:
                raise NotFound(f"no export {export_id[:64]!r} with a grant")
            decision = ReviewSnapshot(stage, actor.user, True, risk, reasons, self.clock())
            return prepare_release(
                session,
                row,
                grant,
                decision,
                views=grant_views(self.views_root, grant.views),
                home=self._home(export_id),
                rules=self.policy.levels.get(row.level),
            )

    def bundle(self, actor: Actor, export_id: str) -> Path:
        """The release bundle of a released export, written on first download."""
        self.authorizer.authorize(actor, "export", "read")
        with self.sessions() as session:
            row = self._export(session, actor, export_id)
            if row.status is not ExportStatus.RELEASED or not row.manifest or not row.signature:
                raise Conflict(f"the export is {row.status}, not released")
            refusal = _grant_refusal(session.get(Grant, row.grant_id), self.clock())
            if refusal is not None:
                self._deny(actor.user, "export.download", f"export:{row.id}", refusal)
            manifest = json.loads(row.manifest)
            signature = json.loads(row.signature)
        path = self._home(export_id) / "bundle.zip"
        if not path.is_file():
            files = [
                (item["name"], self._home(export_id) / item["name"]) for item in manifest["files"]
            ]
            write_bundle(path, manifest, signature, files)
        self.record(
            _entry(
                actor.user,
                "export.download",
                f"export:{export_id}",
                "ok",
                {"manifest_sha256": hashlib.sha256(canonical.encode(manifest)).hexdigest()},
            )
        )
        return path
