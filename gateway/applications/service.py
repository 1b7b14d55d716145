"""Applications and their review (R9–R11): drafting, qualification, the queues, decisions.

An applicant drafts an application (:class:`~gateway.applications.form.ApplicationForm`)
for their organization, attaches the security commitment letter and submits it. On
submit the application is checked against the catalog (every dataset published and
shared, every field one the dataset has and can be granted, the conditions of
conditional data answered) and the organization's qualification (R10: real-name
verified, not flagged, active); whatever fails is listed, recorded, and nothing changes.

Then it waits in one queue at a time (:mod:`gateway.applications.workflow`): the formal
check by a reviewer, the consent of every provider of conditional data, the substantive
review (a reviewer's opinion with a risk assessment) and the approver's decision. Each
queue has its deadline in Chinese working days from the day the application entered it;
the step that closes a queue records whether it was on time, and :meth:`overdue` lists
those past due for the operator. Separation of duties is the authorizer's
(``policies/duties.toml``): nobody checks, reviews or decides on their own
organization's application, and the approver is never the opinion's author.

Every change follows the order of the other services: who may, whether the state allows,
the change with its event row and ledger entry as one job of the write queue. Refusals
by the rules are recorded too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.applications.attachments import AttachmentStore
from gateway.applications.form import ApplicationForm
from gateway.applications.queries import (
    OPERATOR_READERS,
    link_datasets,
    pending_consents,
    plans_of,
    qualification_problems,
    visible,
)
from gateway.applications.snapshots import (
    ApplicationDetail,
    ApplicationSnapshot,
    AttachmentSnapshot,
    DatasetPlan,
    EventSnapshot,
    RiskAssessment,
)
from gateway.applications.workflow import (
    OPEN,
    STAGE_DAYS,
    Step,
    WorkflowError,
    after_check,
    check_can_take,
)
from gateway.authz import Actor, Authorizer, Denied, Target
from gateway.catalog.service import CHINA
from gateway.db.models import (
    Application,
    ApplicationAttachment,
    ApplicationDataset,
    ApplicationEvent,
    ApplicationStatus,
    Organization,
    OrganizationType,
)
from gateway.db.writes import WriteQueue
from gateway.identity.model import (
    MAX_REASON,
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
from sandbox.views.treatments import TreatmentPolicy

MAX_OPINION = 8000
MAX_REASONS = 20
COMMITMENT = "commitment"  # the security commitment letter (R9), needed to submit
S = ApplicationStatus


class ApplicationError(IdentityError):
    """A request about an application refused; the message says why (safe to show)."""


class NotQualified(ApplicationError):
    """The application cannot be submitted; ``reasons`` lists every problem found."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class ApplicationService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        treatments: TreatmentPolicy,
        calendar: WorkCalendar,
        attachments: AttachmentStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.treatments = treatments
        self.calendar = calendar
        self.attachments = attachments
        self.clock = clock

    # ------------------------------------------------------------------ plumbing
    def today(self) -> date:
        return self.clock().astimezone(CHINA).date()

    def _authorize(self, actor: Actor, act: str, what: str, target: Target | None = None) -> None:
        reason = self.authorizer.refusal(actor, "application", act, target)
        if reason is not None:
            self._deny(actor, f"application.{act}", what, reason)

    def _deny(self, actor: Actor, action: str, what: str, reason: str, **detail: Any) -> NoReturn:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason, **detail}))
        raise Denied(reason)

    def _form(self, data: Any) -> ApplicationForm:
        try:
            return (
                data if isinstance(data, ApplicationForm) else ApplicationForm.model_validate(data)
            )
        except ValidationError as exc:
            raise ApplicationError(validation_problems(exc, "form")) from None

    def _application(self, session: Session, actor: Actor, application_id: str) -> Application:
        row = session.get(Application, application_id) if _plausible(application_id) else None
        if row is None or not visible(session, actor, row):
            raise NotFound(f"no application {application_id[:64]!r}")
        return row

    @staticmethod
    def _target(row: Application) -> Target:
        drafted = frozenset({row.opinion_by} if row.opinion_by else set())
        return Target(
            organization=f"org:{row.organization_id}",
            requested_by=row.created_by,
            drafted_by=drafted,
        )

    def _enter(self, row: Application, status: ApplicationStatus) -> None:
        """Move ``row`` to ``status``, starting that queue's deadline if it has one."""
        row.status = status
        now = self.clock()
        row.updated_at = now
        if status in STAGE_DAYS:
            due = self.calendar.add_workdays(self.today(), STAGE_DAYS[status])
            row.stage_since, row.due_on, row.provisional = now, due.day, due.provisional
        else:
            row.stage_since, row.due_on, row.provisional = None, None, False

    def _event(
        self,
        session: Session,
        actor: Actor,
        row: Application,
        step: Step,
        *,
        due_on: date | None,
        **fields: Any,
    ) -> ApplicationEvent:
        """The step's event row and its ledger entry (one job with the change)."""
        on_time = None if due_on is None else self.today() <= due_on
        reasons = fields.pop("reasons", None)
        risk: RiskAssessment | None = fields.pop("risk", None)
        event = ApplicationEvent(
            application_id=row.id,
            round=row.round,
            step=str(step),
            actor=actor.user,
            at=self.clock(),
            status=row.status,
            reasons=json.dumps(list(reasons), ensure_ascii=False) if reasons else None,
            risk=risk.model_dump_json() if risk else None,
            due_on=due_on,
            on_time=on_time,
            **fields,
        )
        session.add(event)
        detail: dict[str, Any] = {"round": row.round, "status": str(row.status)}
        if on_time is not None:
            detail["on_time"] = on_time
        if reasons:
            detail["reasons"] = list(reasons)
        if fields.get("dataset_id"):
            detail["dataset"] = fields["dataset_id"]
        if fields.get("recommends") is not None:
            detail["recommends"] = fields["recommends"]
        if risk is not None:
            detail["risk"] = str(risk.level)
        if row.due_on is not None and row.status in OPEN:
            detail["due_on"] = row.due_on.isoformat()
        self.record(
            _entry(actor.user, f"application.{step}", f"application:{row.id}", "ok", detail)
        )
        return event

    # ------------------------------------------------------------------ reading
    def listing(
        self,
        actor: Actor,
        *,
        status: ApplicationStatus | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[ApplicationSnapshot]:
        """The applications ``actor`` may see: their organization's; for operators every
        submitted one; for providers' stewards the submitted ones that ask for their data."""
        self.authorizer.authorize(actor, "application", "read")
        _check_page(offset, limit)
        own = _own_organization(actor)
        seen = [Application.organization_id == own]
        if OPERATOR_READERS & actor.roles:
            seen.append(Application.status != S.DRAFT)
        elif "provider_steward" in actor.roles:
            theirs = select(ApplicationDataset.application_id).where(
                ApplicationDataset.provider_id == own
            )
            seen.append(and_(Application.status != S.DRAFT, Application.id.in_(theirs)))
        query = select(Application).where(or_(*seen))
        if status is not None:
            query = query.where(Application.status == status)
        today = self.today()
        with self.sessions() as session:
            total, rows = _paged(
                session, query, (Application.created_at.desc(), Application.id), offset, limit
            )
            items = tuple(ApplicationSnapshot.of(row, today) for row in rows)
        return Page(items, total, offset, limit)

    def queue(self, actor: Actor) -> list[ApplicationSnapshot]:
        """What waits for ``actor``, oldest deadline first: a reviewer's formal checks and
        reviews, an approver's decisions, a steward's consents (the ones their own
        organization's data needs and has not given this round)."""
        self.authorizer.authorize(actor, "application", "read")
        statuses: set[ApplicationStatus] = set()
        if "reviewer" in actor.roles:
            statuses |= {S.FORMAL, S.REVIEW}
        if "approver" in actor.roles:
            statuses.add(S.APPROVAL)
        own = _own_organization(actor)
        today = self.today()
        with self.sessions() as session:
            rows = list(
                session.scalars(select(Application).where(Application.status.in_(statuses)))
            )
            rows = [row for row in rows if row.organization_id != own]
            if "provider_steward" in actor.roles:
                waiting = session.scalars(
                    select(Application).where(Application.status == S.CONSENT)
                )
                rows += [row for row in waiting if own in pending_consents(session, row).values()]
            found = [ApplicationSnapshot.of(row, today) for row in rows]
        return sorted(found, key=lambda item: (item.due_on or date.max, item.id))

    def overdue(self, actor: Actor) -> list[ApplicationSnapshot]:
        """Open applications past their queue's deadline (for the operator, R11)."""
        if not OPERATOR_READERS & actor.roles:
            self._deny(actor, "application.read", "applications:overdue", "for the operator")
        self.authorizer.authorize(actor, "application", "read")
        today = self.today()
        with self.sessions() as session:
            rows = session.scalars(
                select(Application).where(Application.status.in_(OPEN), Application.due_on < today)
            )
            found = [ApplicationSnapshot.of(row, today) for row in rows]
        return sorted(found, key=lambda item: (item.due_on or date.max, item.id))

    def get(self, actor: Actor, application_id: str) -> ApplicationDetail:
        self.authorizer.authorize(actor, "application", "read")
        today = self.today()
        with self.sessions() as session:
            row = self._application(session, actor, application_id)
            snapshot = ApplicationSnapshot.of(row, today)
            events = session.scalars(
                select(ApplicationEvent)
                .where(ApplicationEvent.application_id == row.id)
                .order_by(ApplicationEvent.id)
            )
            attachments = session.scalars(
                select(ApplicationAttachment)
                .where(ApplicationAttachment.application_id == row.id)
                .order_by(ApplicationAttachment.uploaded_at)
            )
            pending = pending_consents(session, row) if row.status is S.CONSENT else {}
            return ApplicationDetail(
                application=snapshot,
                plans=tuple(plans_of(session, snapshot.form, self.treatments)),
                events=tuple(EventSnapshot.of(event) for event in events),
                attachments=tuple(AttachmentSnapshot.of(item) for item in attachments),
                pending_consents=tuple(sorted(pending)),
            )

    def plan(self, actor: Actor, form: Any) -> list[DatasetPlan]:
        """What each field of ``form`` would be, and what stands in the way (the form
        page shows it while the applicant writes)."""
        self.authorizer.authorize(actor, "application", "create")
        checked = self._form(form)
        with self.sessions() as session:
            return plans_of(session, checked, self.treatments)

    # ------------------------------------------------------------------ the applicant
    def draft(self, actor: Actor, form: Any) -> ApplicationSnapshot:
        checked = self._form(form)
        self._authorize(actor, "create", "application:new")

        def apply(session: Session) -> ApplicationSnapshot:
            organization = session.get(Organization, _own_organization(actor))
            if organization is None or organization.type is not OrganizationType.APPLICATION_UNIT:
                raise ApplicationError("applications are made by application units")
            row = Application(
                organization_id=organization.id,
                created_by=actor.user,
                title=checked.title,
                form=checked.model_dump_json(),
                status=S.DRAFT,
                created_at=self.clock(),
                updated_at=self.clock(),
            )
            session.add(row)
            session.flush()
            link_datasets(session, row, checked)
            self.record(_entry(actor.user, "application.create", f"application:{row.id}", "ok", {}))
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def update(self, actor: Actor, application_id: str, form: Any) -> ApplicationSnapshot:
        checked = self._form(form)
        what = f"application:{application_id[:64]}"

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._own(session, actor, application_id, "update", what)
            if row.status is not S.DRAFT:
                raise WorkflowError(f"the application is {row.status}: only drafts change")
            row.form, row.title, row.updated_at = (
                checked.model_dump_json(),
                checked.title,
                self.clock(),
            )
            link_datasets(session, row, checked)
            self.record(_entry(actor.user, "application.update", what, "ok", {"round": row.round}))
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def _own(
        self, session: Session, actor: Actor, application_id: str, act: str, what: str
    ) -> Application:
        row = self._application(session, actor, application_id)
        self._authorize(actor, act, what)
        if row.organization_id != _own_organization(actor):
            self._deny(actor, f"application.{act}", what, "only its own organization changes it")
        return row

    def attach(
        self, actor: Actor, application_id: str, *, kind: str, name: str, content: bytes
    ) -> AttachmentSnapshot:
        """Attach a document (``commitment``: the security commitment letter) to a draft."""
        what = f"application:{application_id[:64]}"
        if kind != COMMITMENT:
            raise ApplicationError(f"the attachments are: {COMMITMENT}")
        title = clean_text(name, "a file name", 200)
        stored = self.attachments.check(content)

        def apply(session: Session) -> AttachmentSnapshot:
            row = self._own(session, actor, application_id, "update", what)
            if row.status is not S.DRAFT:
                raise WorkflowError(f"the application is {row.status}: documents go with drafts")
            digest = self.attachments.store(content)
            item = ApplicationAttachment(
                application_id=row.id,
                kind=kind,
                name=title,
                media_type=stored,
                size=len(content),
                sha256=digest,
                uploaded_by=actor.user,
                uploaded_at=self.clock(),
            )
            session.add(item)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "application.attach",
                    what,
                    "ok",
                    {"kind": kind, "sha256": digest, "size": len(content)},
                )
            )
            return AttachmentSnapshot.of(item)

        return self.writes.run(apply)

    def attachment(
        self, actor: Actor, application_id: str, attachment_id: str
    ) -> tuple[AttachmentSnapshot, bytes]:
        """An attachment's description and content, for whoever may see the application."""
        self.authorizer.authorize(actor, "application", "read")
        with self.sessions() as session:
            row = self._application(session, actor, application_id)
            item = (
                session.get(ApplicationAttachment, attachment_id)
                if _plausible(attachment_id)
                else None
            )
            if item is None or item.application_id != row.id:
                raise NotFound(f"no attachment {attachment_id[:64]!r}")
            snapshot = AttachmentSnapshot.of(item)
        return snapshot, self.attachments.read(snapshot.sha256)

    def submit(self, actor: Actor, application_id: str) -> ApplicationSnapshot:
        """Submit a draft: :class:`NotQualified` (recorded) with every problem found, or
        the application in the formal check's queue."""
        what = f"application:{application_id[:64]}"

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._own(session, actor, application_id, "submit", what)
            check_can_take(Step.SUBMIT, row.status)
            form = ApplicationForm.model_validate_json(row.form)
            problems = [
                p for plan in plans_of(session, form, self.treatments) for p in plan.problems
            ]
            problems += qualification_problems(session, row)
            if not session.scalar(
                select(ApplicationAttachment.id).where(
                    ApplicationAttachment.application_id == row.id,
                    ApplicationAttachment.kind == COMMITMENT,
                )
            ):
                problems.append("the security commitment letter is not attached")
            if problems:
                self.record(
                    _entry(
                        actor.user,
                        "application.submit",
                        what,
                        "refused",
                        {"round": row.round, "reasons": problems},
                    )
                )
                raise NotQualified(problems)
            link_datasets(session, row, form)
            row.submitted_at = self.clock()
            self._enter(row, S.FORMAL)
            self._event(session, actor, row, Step.SUBMIT, due_on=None)
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def amend(self, actor: Actor, application_id: str) -> ApplicationSnapshot:
        """Take a refused application back as a draft, for another round."""
        what = f"application:{application_id[:64]}"

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._own(session, actor, application_id, "update", what)
            check_can_take(Step.AMEND, row.status)
            row.round += 1
            row.opinion_by = None
            row.decided_by, row.decided_at = None, None
            self._enter(row, S.DRAFT)
            self._event(session, actor, row, Step.AMEND, due_on=None)
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def withdraw(self, actor: Actor, application_id: str, reason: str) -> ApplicationSnapshot:
        why = clean_text(reason, "a reason", MAX_REASON)
        what = f"application:{application_id[:64]}"

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._own(session, actor, application_id, "withdraw", what)
            check_can_take(Step.WITHDRAW, row.status)
            self._enter(row, S.WITHDRAWN)
            self._event(session, actor, row, Step.WITHDRAW, due_on=None, text=why)
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    # ------------------------------------------------------------------ the operator
    def check(
        self, actor: Actor, application_id: str, *, complete: bool, reasons: Iterable[str] = ()
    ) -> ApplicationSnapshot:
        """A reviewer's formal check: complete (on to consent or review), or refused with
        reasons."""
        why = _reasons(reasons, needed=not complete)

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._operator_step(session, actor, application_id, "check", Step.PASS_CHECK)
            due = row.due_on
            if complete:
                self._enter(row, after_check(bool(pending_consents(session, row))))
                self._event(session, actor, row, Step.PASS_CHECK, due_on=due)
            else:
                self._enter(row, S.REFUSED)
                self._event(session, actor, row, Step.REFUSE_CHECK, due_on=due, reasons=why)
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def consent(
        self,
        actor: Actor,
        application_id: str,
        dataset_id: str,
        *,
        consents: bool,
        reasons: Iterable[str] = (),
    ) -> ApplicationSnapshot:
        """The consent of a provider of conditional data (its steward), or its refusal
        with reasons. Once every conditional dataset has its consent the application goes
        on to the substantive review."""
        why = _reasons(reasons, needed=not consents)
        what = f"application:{application_id[:64]}"

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._application(session, actor, application_id)
            self._authorize(actor, "consent", what, self._target(row))
            check_can_take(Step.CONSENT, row.status)
            pending = pending_consents(session, row)
            if pending.get(dataset_id) != _own_organization(actor):
                self._deny(
                    actor,
                    "application.consent",
                    what,
                    "only the provider of a conditional dataset still waiting consents to it",
                    dataset=dataset_id[:64],
                )
            due = row.due_on
            if consents:
                if len(pending) == 1:
                    self._enter(row, S.REVIEW)
                self._event(session, actor, row, Step.CONSENT, due_on=due, dataset_id=dataset_id)
            else:
                self._enter(row, S.REFUSED)
                self._event(
                    session,
                    actor,
                    row,
                    Step.REFUSE_CONSENT,
                    due_on=due,
                    dataset_id=dataset_id,
                    reasons=why,
                )
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def review(
        self,
        actor: Actor,
        application_id: str,
        *,
        recommends: bool,
        opinion: str,
        risk: RiskAssessment | dict[str, Any],
    ) -> ApplicationSnapshot:
        """A reviewer's substantive opinion with its risk assessment; on to the approver."""
        text = clean_text(opinion, "an opinion", MAX_OPINION)
        try:
            assessed = (
                risk if isinstance(risk, RiskAssessment) else RiskAssessment.model_validate(risk)
            )
        except ValidationError as exc:
            raise ApplicationError(f"the risk assessment: {exc.errors()[0]['msg']}") from None

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._operator_step(session, actor, application_id, "review", Step.REVIEW)
            due = row.due_on
            row.opinion_by = actor.user
            self._enter(row, S.APPROVAL)
            self._event(
                session,
                actor,
                row,
                Step.REVIEW,
                due_on=due,
                recommends=recommends,
                text=text,
                risk=assessed,
            )
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def decide(
        self,
        actor: Actor,
        application_id: str,
        *,
        approve: bool,
        reasons: Iterable[str] = (),
        note: str = "",
    ) -> ApplicationSnapshot:
        """The approver's decision after the opinion (never its author's): approved, or
        refused with reasons."""
        why = _reasons(reasons, needed=not approve)
        remark = clean_text(note, "a note", MAX_OPINION, empty=True) or None

        def apply(session: Session) -> ApplicationSnapshot:
            row = self._operator_step(session, actor, application_id, "approve", Step.APPROVE)
            due = row.due_on
            row.decided_by, row.decided_at = actor.user, self.clock()
            if approve:
                self._enter(row, S.APPROVED)
                self._event(session, actor, row, Step.APPROVE, due_on=due, text=remark)
            else:
                self._enter(row, S.REFUSED)
                self._event(session, actor, row, Step.REJECT, due_on=due, text=remark, reasons=why)
            return ApplicationSnapshot.of(row, self.today())

        return self.writes.run(apply)

    def _operator_step(
        self, session: Session, actor: Actor, application_id: str, act: str, step: Step
    ) -> Application:
        what = f"application:{application_id[:64]}"
        row = self._application(session, actor, application_id)
        self._authorize(actor, act, what, self._target(row))
        check_can_take(step, row.status)
        return row


def _reasons(reasons: Iterable[str], *, needed: bool) -> list[str]:
    """The reasons of a refusal, cleaned: at least one when ``needed`` (R11: every
    refusal says why)."""
    items = [clean_text(item, "a reason", MAX_REASON) for item in reasons if item.strip()]
    if len(items) > MAX_REASONS:
        raise ApplicationError(f"at most {MAX_REASONS} reasons")
    if needed and not items:
        raise ApplicationError("a refusal gives its reasons")
    return items
