"""The catalog: datasets, the revisions of their entries, uploaded versions, objections.

- A provider steward registers a dataset with its entry (R4); every later change is a
  new revision with its reason. Each revision is a request (R5): a reviewer of the
  operator gives an opinion, then an approver decides (never the same person, never
  someone of the provider), within five working days of the request. A revision that
  makes sharing or opening less open says so, and needs the legal basis of the change.
  The dataset is published once its first revision is approved; the revision in force
  is the last one approved.
- A provider steward uploads data for a published dataset. The upload streams to a
  private scratch folder, is checked against the entry in force (schema, then the
  quality report of :mod:`gateway.catalog.quality`), is stored encrypted in the vault
  (``vault.store`` in the ledger) and removed from the scratch folder. A refused upload
  stores nothing and is recorded as refused with its reasons.
- A data user raises an objection to a dataset's quality (R6). The provider answers
  within five working days, or fifteen once extended with a reason, counted on the
  Chinese working-day calendar (:mod:`gateway.workdays`); the objector closes it once
  the answer holds.

Every change follows the order of the identity service: who may, whether the state
allows, the change as a job of the write queue, and its ledger entry committed with it.
Refusals are recorded too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.authz import Actor, Authorizer, Denied, Target
from gateway.catalog.entry import CatalogEntry, DataFormat, less_open
from gateway.catalog.quality import (
    QualityReport,
    UploadRejected,
    check_upload,
    detect_format,
    excel_to_parquet,
)
from gateway.db.models import (
    CatalogRevision,
    Dataset,
    DatasetStatus,
    DatasetVersion,
    Objection,
    ObjectionState,
    RevisionState,
    new_id,
)
from gateway.db.writes import WriteQueue
from gateway.identity.model import (
    MAX_REASON,
    Conflict,
    IdentityError,
    NotFound,
    Page,
    _check_page,
    _entry,
    _own_organization,
    _paged,
    _plausible,
    clean_text,
    validation_problems,
)
from gateway.workdays import WorkCalendar
from sandbox.vault import Vault
from sandbox.views.treatments import TreatmentPolicy

CHINA = ZoneInfo("Asia/Shanghai")
REVIEW_DAYS = 5  # R5: a catalog change is answered within five working days
ANSWER_DAYS = 5  # R6: an objection is answered within five working days ...
EXTENDED_DAYS = 15  # ... or fifteen once extended
MAX_OBJECTION = 4000
BLOCK = 1 << 20


class CatalogError(IdentityError):
    """A catalog request refused; the message says why (safe to show)."""


@dataclass(frozen=True)
class RevisionSnapshot:
    number: int
    entry: CatalogEntry
    reason: str
    less_open: tuple[str, ...]
    state: RevisionState
    requested_by: str
    requested_at: datetime
    due_on: date
    opinion: str | None
    recommends: bool | None
    opinion_by: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None

    @classmethod
    def of(cls, row: CatalogRevision) -> RevisionSnapshot:
        return cls(
            row.number,
            CatalogEntry.model_validate_json(row.entry),
            row.reason,
            tuple(filter(None, row.less_open.split(","))),
            row.state,
            row.requested_by,
            row.requested_at,
            row.due_on,
            row.opinion,
            row.recommends,
            row.opinion_by,
            row.decided_by,
            row.decided_at,
            row.decision_reason,
        )


@dataclass(frozen=True)
class VersionSnapshot:
    id: str
    number: int
    revision: int
    sha256: str
    bytes: int
    rows: int
    format: str
    quality: dict[str, Any]
    warnings: int
    uploaded_by: str
    uploaded_at: datetime

    @classmethod
    def of(cls, row: DatasetVersion) -> VersionSnapshot:
        return cls(
            row.id,
            row.number,
            row.revision,
            row.sha256,
            row.bytes,
            row.rows,
            row.format,
            json.loads(row.quality),
            row.warnings,
            row.uploaded_by,
            row.uploaded_at,
        )


@dataclass(frozen=True)
class ObjectionSnapshot:
    id: str
    dataset_id: str
    version_id: str | None
    raised_by: str
    organization_id: str
    text: str
    state: ObjectionState
    raised_at: datetime
    due_on: date
    provisional: bool
    extended: bool
    extension_reason: str | None
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None
    overdue: bool

    @classmethod
    def of(cls, row: Objection, today: date) -> ObjectionSnapshot:
        answered_on = row.answered_at.astimezone(CHINA).date() if row.answered_at else None
        overdue = (answered_on or today) > row.due_on
        return cls(
            row.id,
            row.dataset_id,
            row.version_id,
            row.raised_by,
            row.organization_id,
            row.text,
            row.state,
            row.raised_at,
            row.due_on,
            row.provisional,
            row.extended,
            row.extension_reason,
            row.answer,
            row.answered_by,
            row.answered_at,
            overdue,
        )


@dataclass(frozen=True)
class DatasetSnapshot:
    id: str
    provider_id: str
    name: str
    status: DatasetStatus
    published_revision: int | None
    entry: CatalogEntry | None  # the entry in force (None: not published yet)
    pending: RevisionSnapshot | None  # a requested change not decided yet
    versions: int
    created_at: datetime


class CatalogService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        vault: Vault,
        treatments: TreatmentPolicy,
        calendar: WorkCalendar,
        scratch: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``scratch``: a folder of the service's own (0700) where uploads stream to
        before they are checked and sealed in the vault."""
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.vault = vault
        self.treatments = treatments
        self.calendar = calendar
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(scratch, 0o700)
        self.scratch = scratch
        self.clock = clock

    # ------------------------------------------------------------------ plumbing
    def today(self) -> date:
        return self.clock().astimezone(CHINA).date()

    def _authorize(
        self, actor: Actor, obj: str, act: str, what: str, target: Target | None = None
    ) -> None:
        reason = self.authorizer.refusal(actor, obj, act, target)
        if reason is not None:
            self._deny(actor, f"{obj}.{act}", what, reason)

    def _deny(self, actor: Actor, action: str, what: str, reason: str, **detail: Any) -> None:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason, **detail}))
        raise Denied(reason)

    def _visible(self, actor: Actor, dataset: Dataset) -> bool:
        """A draft is seen only by its provider; a published dataset by every reader."""
        return (
            dataset.status is not DatasetStatus.DRAFT
            or self._own(actor, dataset)
            or self._operator(actor)
        )

    def _own(self, actor: Actor, dataset: Dataset) -> bool:
        return dataset.provider_id == _own_organization(actor)

    def _operator(self, actor: Actor) -> bool:
        return bool({"reviewer", "approver", "regulator"} & actor.roles)

    def _dataset(self, session: Session, actor: Actor, dataset_id: str) -> Dataset:
        found = session.get(Dataset, dataset_id) if _plausible(dataset_id) else None
        if found is None or not self._visible(actor, found):
            raise NotFound(f"no dataset {dataset_id[:64]!r}")
        return found

    def _entry(self, data: Any) -> CatalogEntry:
        try:
            entry = data if isinstance(data, CatalogEntry) else CatalogEntry.model_validate(data)
        except ValidationError as exc:
            raise CatalogError(validation_problems(exc, "entry")) from None
        if entry.level not in self.treatments.levels:
            raise CatalogError(f"there is no security level {entry.level!r}")
        return entry

    # ------------------------------------------------------------------ reading
    def datasets(
        self, actor: Actor, *, offset: int = 0, limit: int = 50, search: str | None = None
    ) -> Page[DatasetSnapshot]:
        self.authorizer.authorize(actor, "catalog", "read")
        _check_page(offset, limit)
        query = select(Dataset)
        if not self._operator(actor):
            query = query.where(
                or_(
                    Dataset.status != DatasetStatus.DRAFT,
                    Dataset.provider_id == _own_organization(actor),
                )
            )
        if search:
            query = query.where(Dataset.name.contains(search.strip(), autoescape=True))
        with self.sessions() as session:
            total, rows = _paged(
                session, query, [Dataset.created_at.desc(), Dataset.id], offset, limit
            )
            return Page(tuple(self._snapshot(session, row) for row in rows), total, offset, limit)

    def dataset(self, actor: Actor, dataset_id: str) -> DatasetSnapshot:
        self.authorizer.authorize(actor, "catalog", "read")
        with self.sessions() as session:
            return self._snapshot(session, self._dataset(session, actor, dataset_id))

    def revisions(self, actor: Actor, dataset_id: str) -> list[RevisionSnapshot]:
        self.authorizer.authorize(actor, "catalog", "read")
        with self.sessions() as session:
            dataset = self._dataset(session, actor, dataset_id)
            rows = session.scalars(
                select(CatalogRevision)
                .where(CatalogRevision.dataset_id == dataset.id)
                .order_by(CatalogRevision.number)
            )
            return [RevisionSnapshot.of(row) for row in rows]

    def versions(self, actor: Actor, dataset_id: str) -> list[VersionSnapshot]:
        self.authorizer.authorize(actor, "catalog", "read")
        with self.sessions() as session:
            dataset = self._dataset(session, actor, dataset_id)
            rows = session.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == dataset.id)
                .order_by(DatasetVersion.number.desc())
            )
            return [VersionSnapshot.of(row) for row in rows]

    def objections(self, actor: Actor, dataset_id: str) -> list[ObjectionSnapshot]:
        """The dataset's objections: all of them for its provider and the operator, one's
        own organization's for anyone else."""
        self.authorizer.authorize(actor, "objection", "read")
        with self.sessions() as session:
            dataset = self._dataset(session, actor, dataset_id)
            query = select(Objection).where(Objection.dataset_id == dataset.id)
            if not (self._own(actor, dataset) or self._operator(actor)):
                query = query.where(Objection.organization_id == _own_organization(actor))
            today = self.today()
            return [
                ObjectionSnapshot.of(row, today)
                for row in session.scalars(query.order_by(Objection.raised_at.desc()))
            ]

    def _snapshot(self, session: Session, dataset: Dataset) -> DatasetSnapshot:
        revisions = {
            row.number: row
            for row in session.scalars(
                select(CatalogRevision).where(CatalogRevision.dataset_id == dataset.id)
            )
        }
        in_force = revisions.get(dataset.published_revision or 0)
        pending = next(
            (row for row in revisions.values() if row.state is RevisionState.PENDING), None
        )
        versions = session.scalar(
            select(func.count())
            .select_from(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset.id)
        )
        return DatasetSnapshot(
            dataset.id,
            dataset.provider_id,
            dataset.name,
            dataset.status,
            dataset.published_revision,
            CatalogEntry.model_validate_json(in_force.entry) if in_force else None,
            RevisionSnapshot.of(pending) if pending else None,
            int(versions or 0),
            dataset.created_at,
        )

    # ------------------------------------------------------------------ providers
    def register(self, actor: Actor, entry: Any, reason: str) -> DatasetSnapshot:
        """A new dataset, its entry requested as revision 1."""
        self._authorize(actor, "catalog", "create", "dataset:new")
        checked = self._entry(entry)
        why = clean_text(reason, "a reason", MAX_REASON)
        dataset_id = new_id()
        due = self.calendar.add_workdays(self.today(), REVIEW_DAYS)

        def apply(session: Session) -> DatasetSnapshot:
            dataset = Dataset(
                id=dataset_id,
                provider_id=_own_organization(actor),
                name=checked.name,
                created_by=actor.user,
                created_at=self.clock(),
            )
            session.add(dataset)
            session.flush()  # the dataset's row before its revision's
            session.add(self._revision(dataset_id, 1, checked, why, (), actor, due.day))
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "catalog.register",
                    f"dataset:{dataset_id}",
                    "ok",
                    {
                        "name": checked.name,
                        "revision": 1,
                        "entry_sha256": _digest(checked),
                        "reason": why,
                    },
                )
            )
            return self._snapshot(session, dataset)

        return self.writes.run(apply)

    def revise(self, actor: Actor, dataset_id: str, entry: Any, reason: str) -> RevisionSnapshot:
        """Request a change of the entry: a new revision, pending until decided."""
        what = f"dataset:{dataset_id[:64]}"
        self._authorize(actor, "catalog", "update", what)
        checked = self._entry(entry)
        why = clean_text(reason, "a reason", MAX_REASON)
        due = self.calendar.add_workdays(self.today(), REVIEW_DAYS)

        def apply(session: Session) -> RevisionSnapshot:
            dataset = self._dataset(session, actor, dataset_id)
            if not self._own(actor, dataset):
                self._deny(
                    actor, "catalog.update", what, "only the dataset's provider changes its entry"
                )
            rows = list(
                session.scalars(
                    select(CatalogRevision).where(CatalogRevision.dataset_id == dataset.id)
                )
            )
            if any(row.state is RevisionState.PENDING for row in rows):
                raise Conflict("a change of this entry is waiting for a decision already")
            in_force = next((r for r in rows if r.number == dataset.published_revision), None)
            tighter = (
                tuple(less_open(CatalogEntry.model_validate_json(in_force.entry), checked))
                if in_force
                else ()
            )
            number = max(row.number for row in rows) + 1
            revision = self._revision(dataset.id, number, checked, why, tighter, actor, due.day)
            session.add(revision)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "catalog.revise",
                    what,
                    "ok",
                    {
                        "revision": number,
                        "entry_sha256": _digest(checked),
                        "less_open": list(tighter),
                        "reason": why,
                    },
                )
            )
            return RevisionSnapshot.of(revision)

        return self.writes.run(apply)

    def _revision(
        self,
        dataset_id: str,
        number: int,
        entry: CatalogEntry,
        reason: str,
        tighter: tuple[str, ...],
        actor: Actor,
        due: date,
    ) -> CatalogRevision:
        return CatalogRevision(
            dataset_id=dataset_id,
            number=number,
            entry=entry.model_dump_json(),
            reason=reason,
            less_open=",".join(tighter),
            requested_by=actor.user,
            requested_at=self.clock(),
            due_on=due,
        )

    # ------------------------------------------------------------------ the operator
    def review(
        self, actor: Actor, dataset_id: str, number: int, *, recommends: bool, opinion: str
    ) -> RevisionSnapshot:
        """A reviewer's opinion on a pending revision (the approver decides after it)."""
        what = f"dataset:{dataset_id[:64]}"
        text = clean_text(opinion, "an opinion", MAX_OBJECTION)

        def apply(session: Session) -> RevisionSnapshot:
            dataset = self._dataset(session, actor, dataset_id)
            revision = self._pending(session, dataset, number)
            target = Target(
                organization=f"org:{dataset.provider_id}", requested_by=revision.requested_by
            )
            self._authorize(actor, "catalog", "review", what, target)
            if revision.opinion_by is not None:  # its author stays on record for the decision
                raise Conflict(f"revision {number} has an opinion already")
            revision.opinion, revision.recommends = text, recommends
            revision.opinion_by, revision.opinion_at = actor.user, self.clock()
            self.record(
                _entry(
                    actor.user,
                    "catalog.review",
                    what,
                    "ok",
                    {"revision": number, "recommends": recommends},
                )
            )
            return RevisionSnapshot.of(revision)

        return self.writes.run(apply)

    def decide(
        self, actor: Actor, dataset_id: str, number: int, *, approve: bool, reason: str
    ) -> RevisionSnapshot:
        """An approver's decision on a pending revision that has a reviewer's opinion."""
        what = f"dataset:{dataset_id[:64]}"
        why = clean_text(reason, "a reason", MAX_REASON)

        def apply(session: Session) -> RevisionSnapshot:
            dataset = self._dataset(session, actor, dataset_id)
            revision = self._pending(session, dataset, number)
            drafted = frozenset({revision.opinion_by} if revision.opinion_by else set())
            target = Target(
                organization=f"org:{dataset.provider_id}",
                requested_by=revision.requested_by,
                drafted_by=drafted,
            )
            self._authorize(actor, "catalog", "approve", what, target)
            now = self.clock()
            revision.state = RevisionState.APPROVED if approve else RevisionState.REJECTED
            revision.decided_by, revision.decided_at, revision.decision_reason = (
                actor.user,
                now,
                why,
            )
            if approve:
                dataset.published_revision = number
                dataset.status = DatasetStatus.PUBLISHED
                dataset.name = CatalogEntry.model_validate_json(revision.entry).name
            on_time = now.astimezone(CHINA).date() <= revision.due_on
            self.record(
                _entry(
                    actor.user,
                    "catalog.approve" if approve else "catalog.reject",
                    what,
                    "ok",
                    {
                        "revision": number,
                        "less_open": [item for item in revision.less_open.split(",") if item],
                        "on_time": on_time,
                        "reason": why,
                    },
                )
            )
            return RevisionSnapshot.of(revision)

        return self.writes.run(apply)

    def _pending(self, session: Session, dataset: Dataset, number: int) -> CatalogRevision:
        revision = session.scalar(
            select(CatalogRevision).where(
                CatalogRevision.dataset_id == dataset.id, CatalogRevision.number == number
            )
        )
        if revision is None:
            raise NotFound(f"no revision {number} of this dataset")
        if revision.state is not RevisionState.PENDING:
            raise Conflict(f"revision {number} has been decided already ({revision.state})")
        return revision

    # ------------------------------------------------------------------ uploads
    def upload(
        self, actor: Actor, dataset_id: str, blocks: Iterable[bytes], *, filename: str = ""
    ) -> VersionSnapshot:
        """Check ``blocks`` (the file, streamed) against the entry in force and store it
        as the dataset's next version. :class:`UploadRejected` leaves nothing behind."""
        what = f"dataset:{dataset_id[:64]}"
        self._authorize(actor, "dataset", "upload", what)
        with self.sessions() as session:
            dataset = self._dataset(session, actor, dataset_id)
            if not self._own(actor, dataset):
                self._deny(
                    actor, "dataset.upload", what, "only the dataset's provider uploads its data"
                )
            if dataset.published_revision is None:
                raise Conflict("the dataset's entry has not been approved yet")
            revision = dataset.published_revision
            entry = self._in_force(session, dataset)
            previous = session.scalar(
                select(func.max(DatasetVersion.uploaded_at)).where(
                    DatasetVersion.dataset_id == dataset.id
                )
            )
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self.scratch))
        try:
            raw, head, size, original = self._receive(blocks, work)
            found = detect_format(head)
            if found is not entry.format:
                raise UploadRejected(
                    [f"the file is {found}, the catalog entry says {entry.format}"]
                )
            if found is DataFormat.EXCEL:  # stored converted: the view builder reads Parquet
                source = work / "data.parquet"
                excel_to_parquet(raw.rename(work / "data.xlsx"), source)
            else:
                source = raw.rename(
                    work / ("data.parquet" if found is DataFormat.PARQUET else "data.csv")
                )
            report = check_upload(
                source, entry, today=self.today(), previous=previous, now=self.clock()
            )
            version_id = new_id()
            stored = self.vault.put(
                _read(source), dataset=dataset.id, version=version_id, actor=actor.user
            )
        except UploadRejected as exc:
            self.record(
                _entry(
                    actor.user,
                    "dataset.upload",
                    what,
                    "refused",
                    {"problems": exc.problems, "filename": filename[:200]},
                )
            )
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:
            return self._add_version(
                actor,
                dataset.id,
                revision,
                stored.sha256,
                stored.size,
                found,
                report,
                version_id,
                original,
                filename,
            )
        except BaseException:
            # nothing refers to the sealed data: take it out of the vault again
            self.vault.discard(version_id, actor=actor.user, reason="the version was not recorded")
            raise

    def _receive(self, blocks: Iterable[bytes], work: Path) -> tuple[Path, bytes, int, str]:
        raw = work / "received"
        digest = hashlib.sha256()
        size = 0
        head = b""
        with os.fdopen(os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            for block in blocks:
                if len(head) < 8:
                    head += block[:8]
                digest.update(block)
                size += len(block)
                out.write(block)
        if not size:
            raise UploadRejected(["the file is empty"])
        return raw, head, size, digest.hexdigest()

    def _add_version(
        self,
        actor: Actor,
        dataset_id: str,
        revision: int,
        sha256: str,
        size: int,
        found: DataFormat,
        report: QualityReport,
        version_id: str,
        original: str,
        filename: str,
    ) -> VersionSnapshot:
        def apply(session: Session) -> VersionSnapshot:
            number = (
                session.scalar(
                    select(func.max(DatasetVersion.number)).where(
                        DatasetVersion.dataset_id == dataset_id
                    )
                )
                or 0
            ) + 1
            version = DatasetVersion(
                id=version_id,
                dataset_id=dataset_id,
                number=number,
                revision=revision,
                sha256=sha256,
                bytes=size,
                rows=report.rows,
                format=str(found),
                quality=json.dumps(report.to_dict(), ensure_ascii=False),
                warnings=len(report.warnings),
                uploaded_by=actor.user,
                uploaded_at=self.clock(),
            )
            session.add(version)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "dataset.upload",
                    f"dataset:{dataset_id}",
                    "ok",
                    {
                        "version": version_id,
                        "number": number,
                        "revision": revision,
                        "sha256": sha256,
                        "uploaded_sha256": original,
                        "rows": report.rows,
                        "warnings": len(report.warnings),
                        "filename": filename[:200],
                    },
                )
            )
            return VersionSnapshot.of(version)

        return self.writes.run(apply)

    def _in_force(self, session: Session, dataset: Dataset) -> CatalogEntry:
        return entry_in_force(session, dataset)

    # ------------------------------------------------------------------ objections
    def object(
        self, actor: Actor, dataset_id: str, text: str, *, version_id: str | None = None
    ) -> ObjectionSnapshot:
        what = f"dataset:{dataset_id[:64]}"
        self._authorize(actor, "objection", "create", what)
        body = clean_text(text, "the problem", MAX_OBJECTION)
        today = self.today()
        due = self.calendar.add_workdays(today, ANSWER_DAYS)

        def apply(session: Session) -> ObjectionSnapshot:
            dataset = self._dataset(session, actor, dataset_id)
            if dataset.status is not DatasetStatus.PUBLISHED:
                raise Conflict("objections are raised on published datasets")
            if version_id is not None:
                version = (
                    session.get(DatasetVersion, version_id) if _plausible(version_id) else None
                )
                if version is None or version.dataset_id != dataset.id:
                    raise NotFound(f"no version {version_id[:64]!r} of this dataset")
            objection = Objection(
                dataset_id=dataset.id,
                version_id=version_id,
                raised_by=actor.user,
                organization_id=_own_organization(actor),
                text=body,
                raised_at=self.clock(),
                due_on=due.day,
                provisional=due.provisional,
            )
            session.add(objection)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "objection.create",
                    f"objection:{objection.id}",
                    "ok",
                    {"dataset": dataset.id, "version": version_id, "due_on": due.day.isoformat()},
                )
            )
            return ObjectionSnapshot.of(objection, today)

        return self.writes.run(apply)

    def answer(self, actor: Actor, objection_id: str, text: str) -> ObjectionSnapshot:
        body = clean_text(text, "the answer", MAX_OBJECTION)
        return self._provider_act(actor, objection_id, "answer", body)

    def extend(self, actor: Actor, objection_id: str, reason: str) -> ObjectionSnapshot:
        why = clean_text(reason, "a reason", MAX_REASON)
        return self._provider_act(actor, objection_id, "extend", why)

    def _provider_act(
        self, actor: Actor, objection_id: str, act: str, text: str
    ) -> ObjectionSnapshot:
        what = f"objection:{objection_id[:64]}"
        self._authorize(actor, "objection", "answer", what)
        today = self.today()

        def apply(session: Session) -> ObjectionSnapshot:
            objection = session.get(Objection, objection_id) if _plausible(objection_id) else None
            dataset = session.get(Dataset, objection.dataset_id) if objection else None
            if objection is None or dataset is None or not self._own(actor, dataset):
                raise NotFound(f"no objection {objection_id[:64]!r}")
            if objection.state is not ObjectionState.OPEN:
                raise Conflict(f"the objection is {objection.state} already")
            detail: dict[str, Any]
            if act == "extend":
                if objection.extended:
                    raise Conflict("the deadline has been extended once already")
                raised = objection.raised_at.astimezone(CHINA).date()
                due = self.calendar.add_workdays(raised, EXTENDED_DAYS)
                objection.due_on, objection.extended = due.day, True
                objection.provisional = objection.provisional or due.provisional
                objection.extension_reason = text
                detail = {"due_on": due.day.isoformat(), "reason": text}
            else:
                objection.answer, objection.answered_by = text, actor.user
                objection.answered_at = self.clock()
                objection.state = ObjectionState.ANSWERED
                detail = {"on_time": today <= objection.due_on}
            self.record(_entry(actor.user, f"objection.{act}", what, "ok", detail))
            return ObjectionSnapshot.of(objection, today)

        return self.writes.run(apply)

    def close(self, actor: Actor, objection_id: str) -> ObjectionSnapshot:
        """The objector's organization confirms the answer (discover, feed back, correct,
        verify: R6's closed loop)."""
        what = f"objection:{objection_id[:64]}"
        self._authorize(actor, "objection", "create", what)
        today = self.today()

        def apply(session: Session) -> ObjectionSnapshot:
            objection = session.get(Objection, objection_id) if _plausible(objection_id) else None
            if objection is None or objection.organization_id != _own_organization(actor):
                raise NotFound(f"no objection {objection_id[:64]!r}")
            if objection.state is not ObjectionState.ANSWERED:
                raise Conflict("only an answered objection is closed")
            objection.state, objection.closed_at = ObjectionState.CLOSED, self.clock()
            self.record(_entry(actor.user, "objection.close", what, "ok", {}))
            return ObjectionSnapshot.of(objection, today)

        return self.writes.run(apply)


def entry_in_force(session: Session, dataset: Dataset) -> CatalogEntry:
    """The dataset's entry as last approved; :class:`Conflict` if none has been yet."""
    row = session.scalar(
        select(CatalogRevision).where(
            CatalogRevision.dataset_id == dataset.id,
            CatalogRevision.number == dataset.published_revision,
        )
    )
    if row is None:
        raise Conflict("the dataset's entry has not been approved yet")
    return CatalogEntry.model_validate_json(row.entry)


def _digest(entry: CatalogEntry) -> str:
    return hashlib.sha256(entry.model_dump_json().encode()).hexdigest()


def _read(path: Path) -> Iterable[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(BLOCK), b"")
