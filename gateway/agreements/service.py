"""Operation agreements (R12): made from an approved application, signed by both
organizations, verifiable by anyone with the ledger.

:meth:`AgreementService.for_application` makes the agreement of an approved application
the first time a party asks for it (afterwards it returns the same one): the document
(:mod:`gateway.agreements.document`) with the application's scope and the standing
terms, its canonical JSON and SHA-256, recorded as ``agreement.create``. A member of the
application unit with ``agreement:sign`` signs for it, an approver of the operator for
the operator (:meth:`sign`), each with their organization's key
(:mod:`gateway.agreements.keys`), recorded as ``agreement.sign`` with the signature; the
second signature makes the agreement ``signed``. Grants are made from signed agreements.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.agreements.document import (
    DOMAIN_AGREEMENT,
    agreement_document,
    document_bytes,
    document_sha256,
    signature_problems,
)
from gateway.agreements.keys import OrganizationKeys
from gateway.agreements.pdf import render_agreement
from gateway.agreements.terms import Terms
from gateway.applications.queries import visible
from gateway.applications.service import ApplicationService
from gateway.authz import Actor, Authorizer, Denied
from gateway.catalog.service import CHINA
from gateway.db.models import (
    Agreement,
    AgreementStatus,
    Application,
    ApplicationStatus,
    Organization,
    OrganizationKey,
    User,
)
from gateway.db.writes import WriteQueue
from gateway.identity.model import (
    Conflict,
    IdentityError,
    NotFound,
    _entry,
    _own_organization,
    _plausible,
)

PARTY_ROLES = {"applicant": "applicant", "operator": "approver"}


class AgreementError(IdentityError):
    """A request about an agreement refused; the message says why."""


@dataclass(frozen=True)
class AgreementSnapshot:
    id: str
    number: str
    application_id: str
    applicant_id: str
    operator_id: str
    document: dict[str, Any]
    sha256: str
    status: AgreementStatus
    signatures: dict[str, dict[str, str]]
    created_at: datetime

    @classmethod
    def of(cls, row: Agreement) -> AgreementSnapshot:
        signatures = {}
        for name in PARTY_ROLES:
            value = getattr(row, f"{name}_signature")
            if value:
                at: datetime = getattr(row, f"{name}_signed_at")
                signatures[name] = {
                    "key_id": getattr(row, f"{name}_key_id"),
                    "public_key": getattr(row, f"{name}_public_key"),
                    "signature": value,
                    "signed_by": getattr(row, f"{name}_signed_by"),
                    "signed_at": at.isoformat(),
                }
        return cls(
            id=row.id,
            number=row.number,
            application_id=row.application_id,
            applicant_id=row.applicant_id,
            operator_id=row.operator_id,
            document=json.loads(row.document),
            sha256=row.sha256,
            status=row.status,
            signatures=signatures,
            created_at=row.created_at,
        )


class AgreementService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        applications: ApplicationService,
        keys: OrganizationKeys,
        terms: Terms,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.applications = applications
        self.keys = keys
        self.terms = terms
        self.clock = clock

    def _deny(self, actor: Actor, action: str, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason}))
        raise Denied(reason)

    def _agreement(self, session: Session, actor: Actor, agreement_id: str) -> Agreement:
        row = session.get(Agreement, agreement_id) if _plausible(agreement_id) else None
        application = session.get(Application, row.application_id) if row else None
        if row is None or application is None or not visible(session, actor, application):
            raise NotFound(f"no agreement {agreement_id[:64]!r}")
        return row

    # ------------------------------------------------------------------ reading
    def get(self, actor: Actor, agreement_id: str) -> AgreementSnapshot:
        self.authorizer.authorize(actor, "agreement", "read")
        with self.sessions() as session:
            return AgreementSnapshot.of(self._agreement(session, actor, agreement_id))

    def of_application(self, actor: Actor, application_id: str) -> AgreementSnapshot | None:
        """The application's agreement if it has been made (nothing is made here)."""
        self.authorizer.authorize(actor, "agreement", "read")
        with self.sessions() as session:
            application = (
                session.get(Application, application_id) if _plausible(application_id) else None
            )
            if application is None or not visible(session, actor, application):
                raise NotFound(f"no application {application_id[:64]!r}")
            row = session.scalar(
                select(Agreement).where(Agreement.application_id == application.id)
            )
            return AgreementSnapshot.of(row) if row is not None else None

    def document(self, actor: Actor, agreement_id: str) -> bytes:
        """The signed text: the document's canonical JSON."""
        return document_bytes(self.get(actor, agreement_id).document)

    def pdf(self, actor: Actor, agreement_id: str) -> bytes:
        found = self.get(actor, agreement_id)
        return render_agreement(found.document, found.sha256, found.signatures)

    def problems(self, actor: Actor, agreement_id: str) -> list[str]:
        """Why the agreement is not validly signed, against the published keys (empty
        once both signatures hold)."""
        found = self.get(actor, agreement_id)
        with self.sessions() as session:
            published = {
                key.key_id: key.public_key
                for key in session.scalars(
                    select(OrganizationKey).where(
                        OrganizationKey.organization_id.in_((found.applicant_id, found.operator_id))
                    )
                )
            }
        return signature_problems(found.document, found.signatures, published)

    # ------------------------------------------------------------------ making, signing
    def for_application(self, actor: Actor, application_id: str) -> AgreementSnapshot:
        """The agreement of the approved application, made on first request."""
        self.authorizer.authorize(actor, "agreement", "read")
        detail = self.applications.get(actor, application_id)  # NotFound unless visible
        if detail.application.status is not ApplicationStatus.APPROVED:
            raise Conflict(f"the application is {detail.application.status}, not approved")
        issued_on = self.clock().astimezone(CHINA).date()

        def apply(session: Session) -> AgreementSnapshot:
            found = session.scalar(
                select(Agreement).where(Agreement.application_id == detail.application.id)
            )
            if found is not None:
                return AgreementSnapshot.of(found)
            application = session.get(Application, detail.application.id)
            decided_by = (application.decided_by or "") if application else ""
            approver = session.get(User, decided_by.removeprefix("user:")) if decided_by else None
            if application is None or approver is None:
                raise Conflict("the application's approver is unknown")
            applicant = session.get(Organization, application.organization_id)
            operator = session.get(Organization, approver.organization_id)
            providers = {plan.provider_id: plan.provider_id for plan in detail.plans}
            for provider_id in providers:
                found_provider = session.get(Organization, provider_id)
                providers[provider_id] = found_provider.name if found_provider else provider_id
            prefix = f"SBX-{issued_on.year}-"
            last = session.scalar(
                select(func.max(Agreement.number)).where(Agreement.number.like(f"{prefix}%"))
            )
            number = f"{prefix}{int(last.removeprefix(prefix)) + 1 if last else 1:05d}"
            document = agreement_document(
                detail,
                number=number,
                applicant=applicant,
                operator=operator,
                providers=providers,
                terms=self.terms,
                issued_on=issued_on,
            )
            row = Agreement(
                number=number,
                application_id=application.id,
                applicant_id=application.organization_id,
                operator_id=approver.organization_id,
                document=document_bytes(document).decode(),
                sha256=document_sha256(document),
                status=AgreementStatus.AWAITING,
                created_by=actor.user,
                created_at=self.clock(),
            )
            session.add(row)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "agreement.create",
                    f"agreement:{row.id}",
                    "ok",
                    {
                        "application": application.id,
                        "number": number,
                        "sha256": row.sha256,
                        "terms": self.terms.digest,
                    },
                )
            )
            return AgreementSnapshot.of(row)

        try:
            return self.writes.run(apply)
        except IntegrityError:  # another gateway process made one meanwhile
            made = self.of_application(actor, detail.application.id)
            if made is None:  # it took the number: the next request takes the next one
                raise Conflict("an agreement number was taken meanwhile; ask again") from None
            return made

    def sign(self, actor: Actor, agreement_id: str) -> AgreementSnapshot:
        """Sign for the actor's organization: the application unit (an applicant of it) or
        the operator (an approver of it)."""
        what = f"agreement:{agreement_id[:64]}"
        reason = self.authorizer.refusal(actor, "agreement", "sign")
        if reason is not None:
            self._deny(actor, "agreement.sign", what, reason)

        def apply(session: Session) -> AgreementSnapshot:
            row = self._agreement(session, actor, agreement_id)
            own = _own_organization(actor)
            party = next(
                (
                    name
                    for name, role in PARTY_ROLES.items()
                    if getattr(row, f"{name}_id") == own and role in actor.roles
                ),
                None,
            )
            if party is None:
                self._deny(actor, "agreement.sign", what, "only the two parties' signatories sign")
                raise AssertionError  # not reached
            if getattr(row, f"{party}_signature"):
                raise Conflict(f"the {party} has signed this agreement already")
            document = json.loads(row.document)
            signature = self.keys.sign(session, own, DOMAIN_AGREEMENT, document, actor=actor.user)
            now = self.clock()
            setattr(row, f"{party}_key_id", signature.key_id)
            setattr(row, f"{party}_public_key", signature.public_key)
            setattr(row, f"{party}_signature", signature.value)
            setattr(row, f"{party}_signed_by", actor.user)
            setattr(row, f"{party}_signed_at", now)
            if row.applicant_signature and row.operator_signature:
                row.status = AgreementStatus.SIGNED
            self.record(
                _entry(
                    actor.user,
                    "agreement.sign",
                    what,
                    "ok",
                    {
                        "party": party,
                        "organization": own,
                        "sha256": row.sha256,
                        "key_id": signature.key_id,
                        "signature": signature.value,
                        "status": str(row.status),
                    },
                )
            )
            return AgreementSnapshot.of(row)

        return self.writes.run(apply)
