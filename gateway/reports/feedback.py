"""Feedback after use (R14): an applicant reports on a grant's data once the grant has
started, during it or after it ended: the data's quality (1 to 5, with a note), how the
data was used, and to what effect (outcomes, benefits); optionally a note, with or
without a rating, on each dataset the grant's views come from.

Who gives it: an applicant who is a member of the grant. Who reads it: the grant's
organization, the operator's reviewers and approvers, the regulators, and the stewards
of the providers whose datasets the grant's views come from (R15 weighs their data's
quality with it). Anyone else is answered as if the grant did not exist.

Giving feedback follows the order of the other services: who may (the policy, and being
a member), whether the grant allows it now (it has started), the row and its ledger
entry (``feedback.create``: the ratings, the texts' lengths and the SHA-256 of the whole,
never the texts) as one job of the write queue. Refusals by the rules are recorded too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import literal, select
from sqlalchemy.orm import Session, sessionmaker

from audit import canonical
from gateway.applications.queries import OPERATOR_READERS
from gateway.authz import Actor, Authorizer, Denied
from gateway.db.models import Dataset, Feedback, Grant, GrantMember, User
from gateway.db.writes import WriteQueue
from gateway.exports.context import grant_views
from gateway.identity.model import (
    Conflict,
    IdentityError,
    NotFound,
    _entry,
    _own_organization,
    _plausible,
    clean_text,
)

MIN_QUALITY, MAX_QUALITY = 1, 5
MAX_NOTE = 4000
MAX_TEXT = 8000
MAX_DATASET_NOTE = 2000
MAX_LISTED = 500
STEWARD = "provider_steward"


class FeedbackRefused(IdentityError):
    """Feedback that cannot be taken as it is; ``reasons`` lists every problem (422)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


@dataclass(frozen=True)
class DatasetNote:
    """What the feedback says of one dataset of the grant, for its provider."""

    dataset_id: str
    quality: int | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "quality": self.quality, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetNote:
        quality = data.get("quality")
        return cls(str(data["dataset_id"]), None if quality is None else int(quality), data["note"])


@dataclass(frozen=True)
class FeedbackForm:
    """Feedback as given, before it is checked."""

    quality: int
    quality_note: str
    usage: str
    effect: str
    datasets: tuple[DatasetNote, ...] = ()


@dataclass(frozen=True)
class FeedbackSnapshot:
    id: str
    grant_id: str
    organization_id: str
    submitted_by: str
    author: str  # the display name of who gave it
    submitted_at: datetime
    quality: int
    quality_note: str
    usage: str
    effect: str
    datasets: tuple[DatasetNote, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "grant_id": self.grant_id,
            "organization_id": self.organization_id,
            "submitted_by": self.submitted_by,
            "author": self.author,
            "submitted_at": self.submitted_at.astimezone(UTC).isoformat(),
            "quality": self.quality,
            "quality_note": self.quality_note,
            "usage": self.usage,
            "effect": self.effect,
            "datasets": [note.to_dict() for note in self.datasets],
        }


@dataclass(frozen=True)
class GrantDataset:
    """A dataset the grant's views come from, as the feedback form names it."""

    id: str
    name: str
    provider_id: str


@dataclass(frozen=True)
class GrantFeedback:
    """A grant's feedback page: the grant, its datasets, the feedback given so far
    (newest first) and whether the reader may give some now."""

    grant_id: str
    title: str
    starts_at: datetime
    ends_at: datetime
    datasets: tuple[GrantDataset, ...]
    given: tuple[FeedbackSnapshot, ...]
    may_give: bool


# ------------------------------------------------------------------ pure rules
def feedback_refusal(grant: Grant, now: datetime) -> str | None:
    """Why feedback on ``grant`` may not be given at ``now`` (before it starts), or
    ``None``: afterwards any time, suspended, expired or terminated as it may be."""
    if now < grant.starts_at:
        return f"the grant starts at {grant.starts_at.isoformat(timespec='minutes')}"
    return None


def check_can_give(grant: Grant, now: datetime) -> None:
    reason = feedback_refusal(grant, now)
    if reason is not None:
        raise Conflict(f"feedback is given once the grant has started: {reason}")


def can_give(grant: Grant, now: datetime) -> bool:
    return feedback_refusal(grant, now) is None


def checked_form(form: FeedbackForm, datasets: Sequence[GrantDataset]) -> FeedbackForm:
    """``form`` with its texts cleaned, or :class:`FeedbackRefused` with every problem."""
    problems: list[str] = []

    def text(value: str, what: str, limit: int, *, empty: bool = False) -> str:
        try:
            return clean_text(value, what, limit, empty=empty)
        except IdentityError as exc:
            problems.append(str(exc))
            return ""

    if type(form.quality) is not int or not MIN_QUALITY <= form.quality <= MAX_QUALITY:
        problems.append(f"the data quality is rated {MIN_QUALITY} to {MAX_QUALITY}")
    quality_note = text(form.quality_note, "a note on the data's quality", MAX_NOTE)
    usage = text(form.usage, "how the data was used", MAX_TEXT)
    effect = text(form.effect, "the effect of its use", MAX_TEXT)
    known = {dataset.id: dataset for dataset in datasets}
    notes, seen = [], set()
    for item in form.datasets:
        name = known[item.dataset_id].name if item.dataset_id in known else ""
        if not name:
            problems.append(f"the grant's views do not come from dataset {item.dataset_id[:64]!r}")
            continue
        if item.dataset_id in seen:
            problems.append(f"{name} is named twice")
            continue
        seen.add(item.dataset_id)
        if item.quality is not None and (
            type(item.quality) is not int or not MIN_QUALITY <= item.quality <= MAX_QUALITY
        ):
            problems.append(f"{name}: its quality is rated {MIN_QUALITY} to {MAX_QUALITY}")
        note = text(item.note, f"the note on {name}", MAX_DATASET_NOTE, empty=True)
        if item.quality is None and not note:
            continue  # nothing said of it
        notes.append(DatasetNote(item.dataset_id, item.quality, note))
    if problems:
        raise FeedbackRefused(problems)
    return FeedbackForm(form.quality, quality_note, usage, effect, tuple(notes))


def _snapshot(row: Feedback, author: str) -> FeedbackSnapshot:
    return FeedbackSnapshot(
        id=row.id,
        grant_id=row.grant_id,
        organization_id=row.organization_id,
        submitted_by=row.submitted_by,
        author=author,
        submitted_at=row.submitted_at,
        quality=row.quality,
        quality_note=row.quality_note,
        usage=row.usage,
        effect=row.effect,
        datasets=tuple(DatasetNote.from_dict(item) for item in json.loads(row.datasets)),
    )


class FeedbackService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        views_root: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``views_root``: the folder of the grants' views, whose manifests name the
        datasets each grant's views come from."""
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.views_root = views_root
        self.clock = clock

    # ------------------------------------------------------------------ plumbing
    def _deny(self, actor: Actor, action: str, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason}))
        raise Denied(reason)

    def _datasets(self, session: Session, grant: Grant) -> list[GrantDataset]:
        ids = grant_views(self.views_root, grant.views).dataset_ids
        if not ids:
            return []
        rows = session.scalars(select(Dataset).where(Dataset.id.in_(ids)).order_by(Dataset.name))
        return [GrantDataset(row.id, row.name, row.provider_id) for row in rows]

    def _visible(self, session: Session, actor: Actor, grant: Grant) -> bool:
        own = _own_organization(actor)
        if grant.organization_id == own or OPERATOR_READERS & actor.roles:
            return True
        return STEWARD in actor.roles and any(
            dataset.provider_id == own for dataset in self._datasets(session, grant)
        )

    def _grant(self, session: Session, actor: Actor, grant_id: str) -> Grant:
        grant = session.get(Grant, grant_id) if _plausible(grant_id) else None
        if grant is None or not self._visible(session, actor, grant):
            raise NotFound(f"no grant {grant_id[:64]!r}")
        return grant

    def _is_member(self, session: Session, actor: Actor, grant: Grant) -> bool:
        return session.get(GrantMember, (grant.id, actor.user.removeprefix("user:"))) is not None

    def _given(self, session: Session, grant: Grant) -> list[FeedbackSnapshot]:
        rows = session.execute(
            select(Feedback, User.display_name)
            .join(User, literal("user:").concat(User.id) == Feedback.submitted_by, isouter=True)
            .where(Feedback.grant_id == grant.id)
            .order_by(Feedback.submitted_at.desc(), Feedback.id)
            .limit(MAX_LISTED)
        ).all()
        return [_snapshot(row, author or row.submitted_by) for row, author in rows]

    # ------------------------------------------------------------------ reading
    def of_grant(self, actor: Actor, grant_id: str) -> list[FeedbackSnapshot]:
        """The feedback given on the grant, newest first."""
        self.authorizer.authorize(actor, "feedback", "read")
        with self.sessions() as session:
            return self._given(session, self._grant(session, actor, grant_id))

    def overview(self, actor: Actor, grant_id: str) -> GrantFeedback:
        """The grant's feedback page for ``actor``."""
        self.authorizer.authorize(actor, "feedback", "read")
        with self.sessions() as session:
            grant = self._grant(session, actor, grant_id)
            may_give = (
                self.authorizer.allows(actor, "feedback", "create")
                and self._is_member(session, actor, grant)
                and can_give(grant, self.clock())
            )
            return GrantFeedback(
                grant_id=grant.id,
                title=grant.title,
                starts_at=grant.starts_at,
                ends_at=grant.ends_at,
                datasets=tuple(self._datasets(session, grant)),
                given=tuple(self._given(session, grant)),
                may_give=may_give,
            )

    # ------------------------------------------------------------------ giving
    def give(self, actor: Actor, grant_id: str, form: FeedbackForm) -> FeedbackSnapshot:
        """Record the actor's feedback on the grant."""
        what = f"grant:{grant_id[:64]}"
        reason = self.authorizer.refusal(actor, "feedback", "create")
        if reason is not None:
            self._deny(actor, "feedback.create", what, reason)
        with self.sessions() as session:
            grant = self._grant(session, actor, grant_id)
            if not self._is_member(session, actor, grant):
                self._deny(actor, "feedback.create", what, "you are not a member of this grant")
            check_can_give(grant, self.clock())
            cleaned = checked_form(form, self._datasets(session, grant))

        def apply(session: Session) -> FeedbackSnapshot:
            current = session.get(Grant, grant_id)
            if current is None:
                raise NotFound(f"no grant {grant_id[:64]!r}")
            row = Feedback(
                grant_id=current.id,
                organization_id=current.organization_id,
                submitted_by=actor.user,
                submitted_at=self.clock(),
                quality=cleaned.quality,
                quality_note=cleaned.quality_note,
                usage=cleaned.usage,
                effect=cleaned.effect,
                datasets=json.dumps(
                    [note.to_dict() for note in cleaned.datasets], ensure_ascii=False
                ),
            )
            session.add(row)
            session.flush()
            author = session.get(User, actor.user.removeprefix("user:"))
            snapshot = _snapshot(row, author.display_name if author else actor.user)
            self.record(
                _entry(
                    actor.user, "feedback.create", f"feedback:{row.id}", "ok", _summary(snapshot)
                )
            )
            return snapshot

        return self.writes.run(apply)


def _summary(snapshot: FeedbackSnapshot) -> dict[str, Any]:
    """What the ledger keeps of feedback: the ratings, the texts' lengths, and the
    SHA-256 of the whole (canonical JSON of :meth:`FeedbackSnapshot.to_dict` without
    the author's display name), which the stored row can be checked against."""
    content = snapshot.to_dict()
    content.pop("author")
    return {
        "grant": snapshot.grant_id,
        "organization": snapshot.organization_id,
        "quality": snapshot.quality,
        "lengths": {
            "quality_note": len(snapshot.quality_note),
            "usage": len(snapshot.usage),
            "effect": len(snapshot.effect),
        },
        "datasets": [
            {"dataset": note.dataset_id, "quality": note.quality, "note_length": len(note.note)}
            for note in snapshot.datasets
        ],
        "sha256": hashlib.sha256(canonical.encode(content)).hexdigest(),
    }
