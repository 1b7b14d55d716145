"""Evidence bundles for regulators: the ledger's entries of a scope, their proofs and the
documents they name, in one signed zip that verifies offline (FORMAT.md §11,
:mod:`audit.evidence`).

A scope is an organization, a grant or a period, or an organization or a grant within a
period. Its entries come from the trail index: a grant's whole history (its agreement,
application and datasets, its sessions and exports, :mod:`gateway.trail.history`), or
the entries of an organization's people and about it, or every entry of the period. The
documents are those the platform holds for them — the agreement named by
``agreement.create``, ``agreement.sign`` or ``grant.create``, the release bundle of each
``export.release``, the attachments of ``application.attach`` — each tied to the first
entry of the scope that names it.

:meth:`EvidenceService.create` writes ``<data_dir>/evidence/<id>.zip`` and records
``evidence.create`` (the scope, the counts, the bundle's SHA-256); ``<id>.json`` beside
it describes the bundle for listing. Downloads are recorded as ``evidence.download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.orm import Session, sessionmaker

from audit import Ledger
from audit.bundle import write_bundle
from audit.evidence import Document, Written, write_evidence
from gateway.applications.attachments import AttachmentStore
from gateway.authz import Actor, Authorizer, Denied
from gateway.db.models import Agreement, Export, ExportStatus, Grant, Organization, new_id
from gateway.db.writes import WriteQueue
from gateway.identity.model import IdentityError, NotFound, _entry, _plausible
from gateway.trail.index import MAX_LIMIT, TrailEntry, TrailIndex, TrailQuery
from gateway.trail.times import micros

MAX_ENTRIES = 1_000_000  # a larger scope is refused: narrow it
MAX_LISTED = 500
HISTORY_PAGE = 5000
# The entries that make an application or a grant of an organization.
HELD_ACTIONS = ("application.create", "grant.create")
NAMING_ACTIONS = frozenset(
    {"application.attach", "agreement.create", "agreement.sign", "grant.create", "export.release"}
)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_EXTENSIONS = ((b"%PDF-", ".pdf"), (b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"))


class EvidenceError(IdentityError):
    """A request for evidence refused; the message says why (answered with 422)."""


@dataclass(frozen=True)
class EvidenceScope:
    """What a bundle covers: an organization or a grant (ids), a period (µs; ``since``
    inclusive, ``until`` exclusive), or one of the two within a period."""

    organization: str | None = None
    grant: str | None = None
    since: int | None = None
    until: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def problem(self) -> str | None:
        """Why this cannot be a scope, or ``None``."""
        if self.organization is None and self.grant is None:
            if self.since is None and self.until is None:
                return "give an organization, a grant or a period (since, until)"
        if self.organization is not None and self.grant is not None:
            return "give an organization or a grant, not both"
        if self.since is not None and self.until is not None and self.since >= self.until:
            return "since must be before until"
        return None

    def holds(self, time: int) -> bool:
        return (self.since is None or time >= self.since) and (
            self.until is None or time < self.until
        )


@dataclass(frozen=True)
class EvidenceSnapshot:
    """A bundle made, as ``<id>.json`` keeps it."""

    id: str
    scope: dict[str, Any]
    created_by: str
    created_at: int  # µs
    entries: int
    documents: int
    missing: list[str]  # documents the entries name that the platform does not hold
    bytes: int
    sha256: str
    manifest_sha256: str
    checkpoint_size: int
    key_id: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvidenceSnapshot:
        return cls(**data)


class EvidenceService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        ledger: Ledger,
        trail: TrailIndex,
        attachments: AttachmentStore,
        exports_folder: Path,
        folder: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.ledger = ledger
        self.trail = trail
        self.attachments = attachments
        self.exports_folder = exports_folder
        self.folder = folder
        self.clock = clock
        self.max_entries = max_entries

    def _deny(self, actor: Actor, action: str, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason}))
        raise Denied(reason)

    # ------------------------------------------------------------------ making
    def create(self, actor: Actor, scope: EvidenceScope) -> EvidenceSnapshot:
        """Make the evidence bundle of ``scope`` for ``actor`` and record it."""
        reason = self.authorizer.refusal(actor, "evidence", "create")
        if reason is not None:
            self._deny(actor, "evidence.create", "evidence", reason)
        if (problem := scope.problem()) is not None:
            raise EvidenceError(problem)
        self._check_exists(scope)
        seqs, naming = self._collect(scope)
        if not seqs:
            raise EvidenceError("the ledger holds no entry in this scope")
        evidence_id = new_id()
        created = micros(self.clock())
        work = self.folder / f".{evidence_id}.work"
        work.mkdir(mode=0o700)
        destination = self.folder / f"{evidence_id}.zip"
        try:
            documents, missing = self._documents(naming, work)
            written = write_evidence(
                self.ledger,
                destination,
                entries=seqs,
                documents=documents,
                scope=scope.to_dict(),
                created_by=actor.user,
                created=created,
                body={"id": evidence_id, "missing_documents": missing},
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        snapshot = self._snapshot(evidence_id, scope, actor, created, written, missing)
        try:
            self.writes.run(lambda _session: self.record(self._created_entry(snapshot)))
        except BaseException:
            destination.unlink(missing_ok=True)  # not recorded: not made
            raise
        self._keep(snapshot)
        return snapshot

    def _check_exists(self, scope: EvidenceScope) -> None:
        with self.sessions() as session:
            for model, key, what in (
                (Organization, scope.organization, "organization"),
                (Grant, scope.grant, "grant"),
            ):
                if key is not None and (not _plausible(key) or session.get(model, key) is None):
                    raise NotFound(f"no {what} {key[:64]!r}")

    def _collect(self, scope: EvidenceScope) -> tuple[list[int], list[TrailEntry]]:
        """The seqs of the scope's entries, and those of them that name documents."""
        self.trail.catch_up()  # every entry written so far, not what a search has seen
        seqs: list[int] = []
        naming: list[TrailEntry] = []
        for found in self._entries(scope):
            seqs.append(found.seq)
            if len(seqs) > self.max_entries:
                raise EvidenceError(
                    f"the scope holds more than {self.max_entries:,} entries: narrow it "
                    "(a shorter period, or one grant)"
                )
            if found.action in NAMING_ACTIONS and found.outcome == "ok":
                naming.append(found)
        naming.sort(key=lambda found: found.seq)
        return seqs, naming

    def _entries(self, scope: EvidenceScope) -> Iterator[TrailEntry]:
        if scope.grant is not None:
            yield from self._history(f"grant:{scope.grant}", scope)
            return
        if scope.organization is None:
            yield from self._search(scope)
            return
        # An organization: what its people did and what was done about it, and the whole
        # history of each application and grant it holds, so that the operator's reviews
        # and decisions on them are there too (they name the application or the grant, not
        # the organization).
        seen: set[int] = set()
        for found in self._search(scope):
            seen.add(found.seq)
            yield found
        for subject in self._held_by(scope.organization):
            for found in self._history(subject, scope):
                if found.seq not in seen:
                    seen.add(found.seq)
                    yield found

    def _search(self, scope: EvidenceScope, action: str | None = None) -> Iterator[TrailEntry]:
        before: int | None = None
        while True:
            query = TrailQuery(
                since=None if action else scope.since,
                until=None if action else scope.until,
                organization=scope.organization,
                action=action,
                before=before,
                limit=MAX_LIMIT,
            )
            result = self.trail.search(query)
            yield from result.entries
            if result.next_before is None:
                return
            before = result.next_before

    def _held_by(self, organization: str) -> list[str]:
        """The applications and grants of ``organization``, whenever they were made."""
        scope = EvidenceScope(organization=organization)
        return sorted(
            {
                found.object
                for action in HELD_ACTIONS
                for found in self._search(scope, action)
                if found.outcome == "ok"
            }
        )

    def _history(self, subject: str, scope: EvidenceScope) -> Iterator[TrailEntry]:
        after: int | None = None
        while True:
            page = self.trail.history(subject, after=after, limit=HISTORY_PAGE)
            for found in page:
                if scope.until is not None and found.time >= scope.until:
                    return  # oldest first, and times never decrease
                if scope.holds(found.time):
                    yield found
            if len(page) < HISTORY_PAGE:
                return
            after = page[-1].seq

    # ------------------------------------------------------------------ documents
    def _documents(self, naming: list[TrailEntry], work: Path) -> tuple[list[Document], list[str]]:
        """The documents the platform holds for the naming entries (the first entry to
        name each), and what it no longer holds."""
        found: dict[str, Document] = {}
        missing: list[str] = []
        with self.sessions() as session:
            for named in naming:
                kind, _, object_id = named.object.partition(":")
                detail = named.detail
                if named.action == "grant.create" and "agreement" not in detail:
                    continue  # made by hand for an agreement signed elsewhere: names none
                if named.action == "application.attach":
                    document = self._attachment(object_id, detail)
                elif named.action == "export.release":
                    document = self._release(session, object_id, detail, work)
                else:
                    agreement = object_id if kind == "agreement" else detail.get("agreement")
                    document = self._agreement(session, agreement, work)
                if document is None:
                    missing.append(f"entry {named.seq} ({named.action} {named.object})")
                elif document[0] not in found:
                    name, path, kind_of = document
                    found[name] = Document(name, path, named.seq, kind_of)
        return [found[name] for name in sorted(found)], missing

    def _attachment(self, application: str, detail: dict[str, Any]) -> tuple[str, Path, str] | None:
        digest = detail.get("sha256")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            return None
        path = self.attachments.folder / digest
        if not path.is_file():
            return None
        with open(path, "rb") as handle:
            start = handle.read(8)
        extension = next((ext for magic, ext in _EXTENSIONS if start.startswith(magic)), "")
        kind = str(detail.get("kind", "attachment"))
        return f"applications/{application}/{kind}-{digest[:16]}{extension}", path, "file"

    def _agreement(
        self, session: Session, agreement_id: Any, work: Path
    ) -> tuple[str, Path, str] | None:
        if not isinstance(agreement_id, str) or not _plausible(agreement_id):
            return None
        row = session.get(Agreement, agreement_id)
        if row is None:
            return None
        data = row.document.encode()
        if hashlib.sha256(data).hexdigest() != row.sha256:
            return None
        name = f"agreements/{row.number}.json"
        path = work / f"agreement-{row.id}.json"
        path.write_bytes(data)
        return name, path, "file"

    def _release(
        self, session: Session, export_id: str, detail: dict[str, Any], work: Path
    ) -> tuple[str, Path, str] | None:
        """The release bundle of an export: the one its download wrote, or written here
        from the stored manifest and signature (the same bytes)."""
        row = session.get(Export, export_id) if _plausible(export_id) else None
        if (
            row is None
            or row.status is not ExportStatus.RELEASED
            or not row.manifest
            or not row.signature
            or row.manifest_sha256 != detail.get("manifest_sha256")
        ):
            return None
        name = f"exports/{row.id}.zip"
        home = self.exports_folder / row.id
        if (home / "bundle.zip").is_file():
            return name, home / "bundle.zip", "release-bundle"
        manifest = json.loads(row.manifest)
        files = [(item["name"], home / item["name"]) for item in manifest["files"]]
        path = work / f"release-{row.id}.zip"
        try:
            write_bundle(path, manifest, json.loads(row.signature), files)
        except (OSError, ValueError):
            return None  # its files are gone or changed: named as missing
        return name, path, "release-bundle"

    # ------------------------------------------------------------------ records
    def _snapshot(
        self,
        evidence_id: str,
        scope: EvidenceScope,
        actor: Actor,
        created: int,
        written: Written,
        missing: list[str],
    ) -> EvidenceSnapshot:
        return EvidenceSnapshot(
            id=evidence_id,
            scope=scope.to_dict(),
            created_by=actor.user,
            created_at=created,
            entries=written.entries,
            documents=written.documents,
            missing=missing,
            bytes=written.bytes,
            sha256=written.sha256,
            manifest_sha256=written.manifest_sha256,
            checkpoint_size=written.checkpoint_size,
            key_id=written.key_id,
        )

    @staticmethod
    def _created_entry(snapshot: EvidenceSnapshot) -> dict[str, Any]:
        return _entry(
            snapshot.created_by,
            "evidence.create",
            f"evidence:{snapshot.id}",
            "ok",
            {
                "scope": snapshot.scope,
                "entries": snapshot.entries,
                "documents": snapshot.documents,
                "missing": len(snapshot.missing),
                "sha256": snapshot.sha256,
                "manifest_sha256": snapshot.manifest_sha256,
                "checkpoint_size": snapshot.checkpoint_size,
            },
        )

    def _keep(self, snapshot: EvidenceSnapshot) -> None:
        path = self.folder / f"{snapshot.id}.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(snapshot), ensure_ascii=False, sort_keys=True))
        os.replace(partial, path)

    # ------------------------------------------------------------------ reading
    def list_bundles(self, actor: Actor) -> list[EvidenceSnapshot]:
        """The bundles ``actor`` made, newest first."""
        self.authorizer.authorize(actor, "evidence", "read")
        found = []
        for path in self.folder.glob("*.json"):
            snapshot = self._read(path)
            if snapshot is not None and snapshot.created_by == actor.user:
                found.append(snapshot)
        found.sort(key=lambda snapshot: snapshot.created_at, reverse=True)
        return found[:MAX_LISTED]

    def get(self, actor: Actor, evidence_id: str) -> EvidenceSnapshot:
        """A bundle ``actor`` made (any other reads as absent)."""
        self.authorizer.authorize(actor, "evidence", "read")
        snapshot = None
        if _plausible(evidence_id) and not evidence_id.startswith("."):
            snapshot = self._read(self.folder / f"{evidence_id}.json")
        if snapshot is None or snapshot.created_by != actor.user:
            raise NotFound(f"no evidence bundle {evidence_id[:64]!r}")
        return snapshot

    def bundle(self, actor: Actor, evidence_id: str) -> Path:
        """The bundle's file, its download recorded."""
        snapshot = self.get(actor, evidence_id)
        path = self.folder / f"{snapshot.id}.zip"
        if not path.is_file():
            raise NotFound(f"the file of evidence bundle {snapshot.id} is gone")
        self.record(
            _entry(
                actor.user,
                "evidence.download",
                f"evidence:{snapshot.id}",
                "ok",
                {"sha256": snapshot.sha256},
            )
        )
        return path

    @staticmethod
    def _read(path: Path) -> EvidenceSnapshot | None:
        try:
            return EvidenceSnapshot.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
