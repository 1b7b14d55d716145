"""Tables of the control plane. Schema changes go through Alembic migrations
(``gateway/db/migrations``); a test fails when these models and the migrations differ."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC and read back time-zone aware on every database
    (SQLite keeps no zone: what it returns is UTC by construction)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("times must be time-zone aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class OrganizationType(enum.StrEnum):
    PROVIDER = "provider"
    APPLICATION_UNIT = "application_unit"
    OPERATOR = "operator"
    REGULATOR = "regulator"


class OrganizationStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class VerificationStatus(enum.StrEnum):
    """Real-name verification of an organization (R10)."""

    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    REJECTED = "rejected"


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    return Enum(kind, name=name, native_enum=False, length=32, values_callable=_values)


def _values(kind: type[enum.StrEnum]) -> list[str]:
    return [member.value for member in kind]


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    type: Mapped[OrganizationType] = mapped_column(_enum(OrganizationType, "organization_type"))
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    verification: Mapped[VerificationStatus] = mapped_column(
        _enum(VerificationStatus, "verification_status"), default=VerificationStatus.UNVERIFIED
    )
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # dishonesty / violation
    status: Mapped[OrganizationStatus] = mapped_column(
        _enum(OrganizationStatus, "organization_status"), default=OrganizationStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    users: Mapped[list[User]] = relationship(back_populates="organization")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    # Sessions opened before this moment end (a reset by an administrator, say).
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # no code is used twice
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[UserStatus] = mapped_column(
        _enum(UserStatus, "user_status"), default=UserStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    organization: Mapped[Organization] = relationship(back_populates="users")
    roles: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class RoleGrant(Base):
    """A role a user holds in their organization; granting and revoking are recorded in
    the audit ledger by the service that does it."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role", name="uq_role_grants_user_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    granted_by: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    user: Mapped[User] = relationship(back_populates="roles")


class ApiToken(Base):
    """A personal API token for scripts. Only its SHA-256 is stored (tokens carry 256
    bits of randomness, so a slow hash would add nothing but latency to every request)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BrowserSession(Base):
    """A signed-in browser. The cookie carries a random secret of which only the SHA-256
    is kept; ``id`` is what the audit ledger names. A session ends at ``expires_at``, after
    an idle period, at sign-out, or when its user or organization stops being active."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PrivacyBudget(Base):
    """A grant's differential-privacy budget, in millionths of epsilon so that spending
    is exact integer arithmetic. ``spent`` never exceeds ``total``: every spend is one
    conditional UPDATE (gateway.budget)."""

    __tablename__ = "privacy_budgets"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    total_micro: Mapped[int] = mapped_column(BigInteger)
    spent_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class PrivacySpend(Base):
    """One payment from a budget: what it bought is in the ledger entry of the same id."""

    __tablename__ = "privacy_spends"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    grant_id: Mapped[str] = mapped_column(
        ForeignKey("privacy_budgets.grant_id", ondelete="CASCADE"), index=True
    )
    epsilon_micro: Mapped[int] = mapped_column(BigInteger)
    spent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class DatasetStatus(enum.StrEnum):
    DRAFT = "draft"  # registered, its first revision not approved yet
    PUBLISHED = "published"
    WITHDRAWN = "withdrawn"


class RevisionState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ObjectionState(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


class Dataset(Base):
    """A dataset of the catalog. What it is lives in its revisions (``CatalogRevision``);
    ``published_revision`` is the one in force."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    provider_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[DatasetStatus] = mapped_column(
        _enum(DatasetStatus, "dataset_status"), default=DatasetStatus.DRAFT
    )
    published_revision: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class CatalogRevision(Base):
    """One version of a dataset's catalog entry: requested by a provider steward, given
    an opinion by a reviewer, approved or rejected by an approver (R5): three people.
    ``entry`` is the entry's JSON."""

    __tablename__ = "catalog_revisions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    entry: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(500))
    less_open: Mapped[str] = mapped_column(String(40), default="")  # "share,open"
    state: Mapped[RevisionState] = mapped_column(
        _enum(RevisionState, "revision_state"), default=RevisionState.PENDING
    )
    requested_by: Mapped[str] = mapped_column(String(40))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    due_on: Mapped[date] = mapped_column(Date)
    opinion: Mapped[str | None] = mapped_column(Text)  # a reviewer's, before the decision
    recommends: Mapped[bool | None] = mapped_column(Boolean)
    opinion_by: Mapped[str | None] = mapped_column(String(40))
    opinion_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_reason: Mapped[str | None] = mapped_column(String(500))


class DatasetVersion(Base):
    """Data uploaded for a dataset, checked against the entry in force and stored in the
    vault under ``id``; ``quality`` is the quality report's JSON."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    quality: Mapped[str] = mapped_column(Text)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    uploaded_by: Mapped[str] = mapped_column(String(40))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Objection(Base):
    """A data user's report of a quality problem (R6): the provider answers within five
    working days, or fifteen once extended, on the Chinese working-day calendar."""

    __tablename__ = "objections"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version_id: Mapped[str | None] = mapped_column(String(64))
    raised_by: Mapped[str] = mapped_column(String(40))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[ObjectionState] = mapped_column(
        _enum(ObjectionState, "objection_state"), default=ObjectionState.OPEN
    )
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    due_on: Mapped[date] = mapped_column(Date)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    extended: Mapped[bool] = mapped_column(Boolean, default=False)
    extension_reason: Mapped[str | None] = mapped_column(String(500))
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(40))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class GrantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # by an approver (R19), until resumed
    EXPIRED = "expired"  # its period is over (also derived from ``ends_at``)
    TERMINATED = "terminated"  # ended for good


class Grant(Base):
    """Time-bounded, suspendable permission for an application unit's members to work in
    a sandbox on the views in ``<data_dir>/views/<views>``. ``gid`` is the grant's Unix
    group in the sandboxes (from the pool of ``sandbox.gid_base``)."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # a slug: the hub's server name
    title: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    views: Mapped[str] = mapped_column(String(63))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[GrantStatus] = mapped_column(
        _enum(GrantStatus, "grant_status"), default=GrantStatus.ACTIVE
    )
    gid: Mapped[int] = mapped_column(Integer, unique=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    suspended_by: Mapped[str | None] = mapped_column(String(40))
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    suspended_reason: Mapped[str | None] = mapped_column(String(500))
    # the signed agreement it was made from (None: made by hand for one signed elsewhere)
    agreement_id: Mapped[str | None] = mapped_column(String(32), index=True)


class GrantMember(Base):
    """A user who may work in the grant's sandbox."""

    __tablename__ = "grant_members"

    grant_id: Mapped[str] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)


class SandboxUid(Base):
    """A user's Unix uid in every sandbox they open: allocated once, kept for good."""

    __tablename__ = "sandbox_uids"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    uid: Mapped[int] = mapped_column(Integer, unique=True)


class SandboxSession(Base):
    """One run of a user's sandbox for a grant, from the hub's start to its stop. Its
    kernels' recorder authenticates with a token of which only the SHA-256 is kept."""

    __tablename__ = "sandbox_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(500))


class ApplicationStatus(enum.StrEnum):
    """Where an application is (:mod:`gateway.applications.workflow`)."""

    DRAFT = "draft"
    FORMAL = "formal"
    CONSENT = "consent"
    REVIEW = "review"
    APPROVAL = "approval"
    APPROVED = "approved"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


class Application(Base):
    """An application unit's request to use datasets for a purpose (R9). ``form`` is the
    :class:`~gateway.applications.form.ApplicationForm` as JSON; ``round`` counts the
    submissions (a refused application may be amended and submitted again). ``due_on``
    is the deadline of the queue it waits in, in Chinese working days."""

    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))
    form: Mapped[str] = mapped_column(Text)
    status: Mapped[ApplicationStatus] = mapped_column(
        _enum(ApplicationStatus, "application_status"), default=ApplicationStatus.DRAFT, index=True
    )
    round: Mapped[int] = mapped_column(Integer, default=1)
    stage_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_on: Mapped[date | None] = mapped_column(Date)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    opinion_by: Mapped[str | None] = mapped_column(String(40))  # this round's reviewer
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ApplicationEvent(Base):
    """One step on an application (submit, check, consent, opinion, decision, …), kept
    for good: the application's history, shown to its parties and to regulators. Rows
    are only ever added."""

    __tablename__ = "application_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # in order
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    status: Mapped[ApplicationStatus] = mapped_column(
        _enum(ApplicationStatus, "application_status")
    )
    dataset_id: Mapped[str | None] = mapped_column(String(32))  # a provider's consent
    recommends: Mapped[bool | None] = mapped_column(Boolean)
    text: Mapped[str | None] = mapped_column(Text)  # an opinion, or a decision's note
    reasons: Mapped[str | None] = mapped_column(Text)  # JSON list: why it was refused
    risk: Mapped[str | None] = mapped_column(Text)  # JSON: the reviewer's risk assessment
    due_on: Mapped[date | None] = mapped_column(Date)  # the deadline of the stage it closed
    on_time: Mapped[bool | None] = mapped_column(Boolean)


class ApplicationAttachment(Base):
    """A document attached to an application (the security commitment letter). The
    content is kept in ``<data_dir>/attachments/<sha256>``, read-only."""

    __tablename__ = "application_attachments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by: Mapped[str] = mapped_column(String(40))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ApplicationDataset(Base):
    """A dataset an application asks for, with its provider: the providers' queues and
    the consents a round needs are read from here. Rewritten while the application is a
    draft."""

    __tablename__ = "application_datasets"

    application_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    conditional: Mapped[bool] = mapped_column(Boolean, default=False)


class AgreementStatus(enum.StrEnum):
    AWAITING = "awaiting"  # signatures
    SIGNED = "signed"  # by both organizations


class Agreement(Base):
    """The operation agreement made from an approved application (R12): ``document`` is
    its canonical JSON, ``sha256`` that text's digest; each party's signature, with the
    key it was made with and who signed, once given."""

    __tablename__ = "agreements"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"), unique=True)
    applicant_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    document: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[AgreementStatus] = mapped_column(
        _enum(AgreementStatus, "agreement_status"), default=AgreementStatus.AWAITING
    )
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    applicant_key_id: Mapped[str | None] = mapped_column(String(64))
    applicant_public_key: Mapped[str | None] = mapped_column(String(64))
    applicant_signature: Mapped[str | None] = mapped_column(String(128))
    applicant_signed_by: Mapped[str | None] = mapped_column(String(40))
    applicant_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    operator_key_id: Mapped[str | None] = mapped_column(String(64))
    operator_public_key: Mapped[str | None] = mapped_column(String(64))
    operator_signature: Mapped[str | None] = mapped_column(String(128))
    operator_signed_by: Mapped[str | None] = mapped_column(String(40))
    operator_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OrganizationKey(Base):
    """An organization's signing key as published in the ledger (``organization.key``):
    added with that entry, so a key is used only once its publication is durable."""

    __tablename__ = "organization_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class SandboxExecution(Base):
    """Code a session ran (a cell, an input, a command), as recorded in the ledger's
    ``sandbox.execute`` entry of the same SHA-256: the provenance a release names. Rows
    are only ever added."""

    __tablename__ = "sandbox_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # in order
    session_id: Mapped[str] = mapped_column(ForeignKey("sandbox_sessions.id"), index=True)
    grant_id: Mapped[str] = mapped_column(String(63), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ExportStatus(enum.StrEnum):
    """Where an export request is (:mod:`gateway.exports.workflow`)."""

    UPLOADING = "uploading"  # files arriving from the sandbox
    BLOCKED = "blocked"  # an automated check blocks it; it goes no further
    REVIEW = "review"  # a reviewer's opinion
    APPROVAL = "approval"  # an approver's decision
    SECOND_APPROVAL = "second_approval"  # a high-risk export's second, different approver
    RELEASED = "released"  # approved: the signed bundle is ready to download
    REJECTED = "rejected"


class ExportRisk(enum.StrEnum):
    NORMAL = "normal"
    HIGH = "high"  # two approvers


class Export(Base):
    """A request to take files out of a grant's sandbox (R13): the files, the airlock's
    report, the people's decisions, and once released the signed bundle's digests."""

    __tablename__ = "exports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    session_id: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[ExportStatus] = mapped_column(
        _enum(ExportStatus, "export_status"), default=ExportStatus.UPLOADING, index=True
    )
    risk: Mapped[ExportRisk] = mapped_column(
        _enum(ExportRisk, "export_risk"), default=ExportRisk.NORMAL
    )
    level: Mapped[str] = mapped_column(String(16), default="")
    report: Mapped[str | None] = mapped_column(Text)  # the CheckReport's JSON
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    manifest: Mapped[str | None] = mapped_column(Text)  # the signed release manifest's JSON
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(Text)  # JSON: key id, public key, value


class ExportFile(Base):
    """One file of an export, as announced (name, size, SHA-256) and once received."""

    __tablename__ = "export_files"

    export_id: Mapped[str] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received: Mapped[bool] = mapped_column(Boolean, default=False)


class ExportReview(Base):
    """A person's step on an export: a reviewer's opinion or an approver's decision, with
    the reasons and the risk they saw. Rows are only ever added."""

    __tablename__ = "export_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # in order
    export_id: Mapped[str] = mapped_column(ForeignKey("exports.id"), index=True)
    stage: Mapped[ExportStatus] = mapped_column(_enum(ExportStatus, "export_status"))
    actor: Mapped[str] = mapped_column(String(40))
    approve: Mapped[bool] = mapped_column(Boolean)
    risk: Mapped[ExportRisk] = mapped_column(_enum(ExportRisk, "export_risk"))
    reasons: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ReleasedTable(Base):
    """A table a release took out, in the airlock's comparable form, under each dataset
    of the grant: later exports of the same data are compared with it (differencing)."""

    __tablename__ = "released_tables"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(ForeignKey("exports.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)
    organization_id: Mapped[str] = mapped_column(String(32))
    table: Mapped[str] = mapped_column(Text)  # canonical JSON of the airlock's form
    released_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Feedback(Base):
    """An applicant's report after using a grant's data (R14): the data's quality (1 to
    5, with a note), how the data was used and to what effect, and optionally a note per
    dataset of the grant (``datasets``: JSON list of ``{"dataset_id", "quality", "note"}``)
    for its provider. Rows are only ever added."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    submitted_by: Mapped[str] = mapped_column(String(40))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    quality: Mapped[int] = mapped_column(Integer)
    quality_note: Mapped[str] = mapped_column(Text)
    usage: Mapped[str] = mapped_column(Text)
    effect: Mapped[str] = mapped_column(Text)
    datasets: Mapped[str] = mapped_column(Text, default="[]")


class Verdict(enum.StrEnum):
    """The authority's verdict on the operator's year (Qingdao §39)."""

    PASS = "pass"  # noqa: S105 - 通过评估, a verdict, not a secret
    FAIL = "fail"  # 未通过评估
    RECTIFY = "rectify"  # 限期整改: rectified within 30 days, then evaluated again


class OperatorVerdict(Base):
    """A regulator's verdict on the operator's year, with its reasons; a rectification's
    re-evaluation is the next ``round`` of the same year. Rows are only ever added."""

    __tablename__ = "operator_verdicts"
    __table_args__ = (UniqueConstraint("year", "round"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    year: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[Verdict] = mapped_column(_enum(Verdict, "verdict"))
    reasons: Mapped[str] = mapped_column(Text)
    rectify_by: Mapped[date | None] = mapped_column(Date)  # the last day to rectify
    figures_sha256: Mapped[str] = mapped_column(String(64))  # the figures it was given on
    decided_by: Mapped[str] = mapped_column(String(40))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
