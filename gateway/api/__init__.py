"""The gateway's HTTP API (``/api/v1``): a thin shell over the domain services.

:func:`create_app` builds the application for one :class:`~gateway.settings.Settings`:
on start-up it migrates the database, opens the ledger (one writer per process; its group
commit serves every request handler), starts the write queue (state changes applied in
batches, :mod:`gateway.db.writes`) and loads the policy, recording the load.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse

from audit import Ledger, LedgerError
from gateway import web
from gateway.agreements.grants import AgreementGrants
from gateway.agreements.keys import OrganizationKeys
from gateway.agreements.pdf import PdfError
from gateway.agreements.service import AgreementService
from gateway.agreements.terms import load_terms
from gateway.api import context
from gateway.api.deps import Services, document_sign_in
from gateway.api.limits import BodyLimit
from gateway.api.routes import (
    agreements,
    alerts,
    applications,
    catalog,
    evidence,
    exports,
    health,
    ledger,
    me,
    organizations,
    reports,
    sandbox,
    trail,
    users,
)
from gateway.applications.attachments import AttachmentRefused, AttachmentStore
from gateway.applications.service import ApplicationService, NotQualified
from gateway.applications.workflow import WorkflowError
from gateway.authz import Authorizer, Denied
from gateway.catalog.quality import UploadRejected
from gateway.catalog.service import CatalogService
from gateway.db import make_engine, migrate, session_factory
from gateway.db.writes import WriteQueue
from gateway.exports.service import ExportService
from gateway.identity.model import Conflict, IdentityError, NotFound
from gateway.identity.service import IdentityService
from gateway.reports.feedback import FeedbackRefused, FeedbackService
from gateway.reports.service import ReportService
from gateway.sandboxes.hub import HubClient
from gateway.sandboxes.receipts import ReceiptingSink
from gateway.sandboxes.secrets import SandboxSecrets
from gateway.sandboxes.service import (
    CodeTooLarge,
    SandboxRefused,
    SandboxService,
    UnknownSession,
)
from gateway.settings import Settings
from gateway.trail import Observer, TrailIndex
from gateway.trail.alerts import AlertDetector
from gateway.trail.evidence import EvidenceService
from gateway.workdays import WorkCalendar
from sandbox.airlock import load_airlock
from sandbox.vault import Vault
from sandbox.views.builder import ViewBuilder
from sandbox.views.disclosure import load_disclosure
from sandbox.views.treatments import load_treatments

API_PREFIX = "/api/v1"
# Sent with every response: no framing, no sniffing, no third-party anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# The interactive API page loads Swagger UI from its CDN (where the network allows).
DOCS_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https:; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; frame-ancestors 'none'",
}
log = logging.getLogger("sbx.gateway")


def security_headers(settings: Settings) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, letting forms lead to the hub too ("Open sandbox" posts to
    the gateway, which sends the browser on to the hub with a sign-on ticket)."""
    hub = urlsplit(settings.sandbox.hub_url)
    policy = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {hub.scheme}://{hub.netloc}"
    )
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


def open_services(settings: Settings) -> Services:
    settings.prepare_data_dir()
    engine = make_engine(settings.database)
    migrate(engine)
    ledger = Ledger(settings.ledger_dir, settings.ledger.options())
    sessions = session_factory(engine)
    writes = WriteQueue(sessions, ReceiptingSink(ledger, context.LedgerSink(ledger)))
    authorizer = Authorizer(settings.policies_dir, writes.record)
    identity = IdentityService(sessions, authorizer, writes.record, writes=writes)
    catalog = open_catalog(settings, identity)
    applying = open_applications(settings, catalog)
    agreements = open_agreements(settings, applying)
    sandboxes = open_sandboxes(settings, identity)
    exporting = open_exports(settings, catalog, agreements, sandboxes)
    trail_index = open_trail(
        settings, ledger, [AlertDetector.from_policies(settings.policies_dir, catalog.calendar)]
    )
    return Services(
        sessions=sessions,
        ledger=ledger,
        authorizer=authorizer,
        identity=identity,
        web=settings.web,
        catalog=catalog,
        sandboxes=sandboxes,
        applications=applying,
        agreements=agreements,
        agreement_grants=open_agreement_grants(settings, catalog, agreements, sandboxes),
        exports=exporting,
        reports=open_reports(settings, sandboxes),
        trail=trail_index,
        evidence=open_evidence(settings, trail_index, applying, exporting),
    )


def open_catalog(settings: Settings, identity: IdentityService) -> CatalogService:
    """The catalog over the identity service's database, write queue and policy: the
    vault and the upload scratch folder in the data directory, the treatments policy and
    the working-day calendar from the policies folder."""
    return CatalogService(
        identity.sessions,
        identity.writes,
        identity.authorizer,
        vault=Vault(settings.data_dir / "vault", identity.writes.record),
        treatments=load_treatments(settings.policies_dir / "treatments.yaml"),
        calendar=WorkCalendar.from_file(settings.policies_dir / "calendar.toml"),
        scratch=settings.data_dir / "catalog",
        clock=identity.clock,
    )


def open_applications(settings: Settings, catalog: CatalogService) -> ApplicationService:
    """Applications over the catalog's database, write queue, policy, treatments and
    working-day calendar; their documents in the data directory."""
    return ApplicationService(
        catalog.sessions,
        catalog.writes,
        catalog.authorizer,
        treatments=catalog.treatments,
        calendar=catalog.calendar,
        attachments=AttachmentStore(settings.data_dir / "attachments"),
        clock=lambda: catalog.clock(),
    )


def open_agreements(settings: Settings, applications: ApplicationService) -> AgreementService:
    """Agreements over the applications' database, write queue and policy; the
    organizations' keys in the data directory, the standing terms from the policies."""
    return AgreementService(
        applications.sessions,
        applications.writes,
        applications.authorizer,
        applications=applications,
        keys=OrganizationKeys(settings.data_dir / "keys" / "organizations", applications.record),
        terms=load_terms(settings.policies_dir / "agreement.yaml"),
        clock=lambda: applications.clock(),
    )


def view_builder(settings: Settings, catalog: CatalogService) -> Callable[[], ViewBuilder]:
    """The view builder over the vault, made when it is needed (it alone reads the vault)."""

    def builder() -> ViewBuilder:
        return ViewBuilder(
            settings.data_dir / "builder",
            settings.data_dir / "vault",
            catalog.treatments,
            load_disclosure(settings.policies_dir / "disclosure.yaml"),
            catalog.writes.record,
        )

    return builder


def open_agreement_grants(
    settings: Settings,
    catalog: CatalogService,
    agreements: AgreementService,
    sandboxes: SandboxService,
) -> AgreementGrants:
    """Grants from signed agreements: the views built into the data directory."""
    return AgreementGrants(
        agreements,
        sandboxes,
        catalog,
        view_builder(settings, catalog),
        settings.data_dir / "views",
        catalog.authorizer,
    )


def open_exports(
    settings: Settings,
    catalog: CatalogService,
    agreements: AgreementService,
    sandboxes: SandboxService,
) -> ExportService:
    """Exports over the sandboxes' database, write queue and policy: their files in the
    data directory, signed with the organizations' keys, checked by the airlock's policy
    against the views' rows and, through the view builder, the raw data's."""
    policies = settings.policies_dir
    builder = view_builder(settings, catalog)
    return ExportService(
        sandboxes.sessions,
        sandboxes.writes,
        sandboxes.authorizer,
        sandboxes=sandboxes,
        keys=agreements.keys,
        policy=load_airlock(
            policies / "airlock.yaml", load_disclosure(policies / "disclosure.yaml")
        ),
        folder=settings.data_dir / "exports",
        views_root=settings.data_dir / "views",
        raw_index=lambda version: builder().raw_index(version),
        raw_values=lambda version, columns: builder().raw_values(version, columns),
        clock=lambda: sandboxes.clock(),
    )


def open_trail(
    settings: Settings, ledger: Ledger, observers: Sequence[Observer] = ()
) -> TrailIndex:
    """The trail index in the data directory, catching up with the ledger in the
    background (a long ledger does not hold up start-up; each search catches up too)."""
    index = TrailIndex(settings.data_dir / "trail.sqlite3", ledger, observers)
    index.start_catching_up()
    return index


def open_evidence(
    settings: Settings,
    trail_index: TrailIndex,
    applications: ApplicationService,
    exporting: ExportService,
) -> EvidenceService:
    """Evidence bundles over the applications' database, write queue and policy: the
    entries from the trail index, the documents from the attachments and the exports,
    the bundles in the data directory."""
    return EvidenceService(
        applications.sessions,
        applications.writes,
        applications.authorizer,
        ledger=trail_index.ledger,
        trail=trail_index,
        attachments=applications.attachments,
        exports_folder=exporting.folder,
        folder=settings.data_dir / "evidence",
        clock=lambda: applications.clock(),
    )


def open_reports(settings: Settings, sandboxes: SandboxService) -> ReportService:
    """The operation report and the applicants' feedback over the sandboxes' database,
    write queue, policy and clock (the grants' time); the grants' views name the datasets
    feedback is about."""
    feedback = FeedbackService(
        sandboxes.sessions,
        sandboxes.writes,
        sandboxes.authorizer,
        views_root=settings.data_dir / "views",
        clock=lambda: sandboxes.clock(),
    )
    return ReportService(
        sandboxes.sessions,
        sandboxes.writes,
        sandboxes.authorizer,
        feedback=feedback,
        clock=lambda: sandboxes.clock(),
    )


def open_sandboxes(
    settings: Settings, identity: IdentityService, *, hub_transport: Any = None
) -> SandboxService:
    """Grants and sandbox sessions over the identity service's database, write queue and
    policy; the secrets shared with the hub made in the data directory on first run."""
    secrets = SandboxSecrets.load_or_create(settings.data_dir)
    return SandboxService(
        identity.sessions,
        identity.writes,
        identity.authorizer,
        settings=settings.sandbox,
        secrets=secrets,
        views_root=settings.data_dir / "views",
        hub=HubClient(settings.sandbox.hub_api_url, secrets.hub_api_token, hub_transport),
        clock=identity.clock,
    )


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = services or open_services(settings)
        app.state.services = opened
        try:
            yield
        finally:
            if services is None:
                opened.close()

    app = FastAPI(
        title="sbx gateway",
        version="1",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks look for providers on every request; sbx logs
        # its own JSON lines (gateway.logs) and has no tracing backend to send spans to.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    for router in (
        health.router,
        me.router,
        organizations.router,
        users.router,
        catalog.router,
        applications.router,
        agreements.router,
        sandbox.router,
        sandbox.grants,
        exports.from_sandbox,
        exports.router,
        reports.router,
        ledger.router,
        trail.router,
        alerts.router,
        evidence.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    web.mount(app, api_prefix=API_PREFIX)
    document_sign_in(app)
    app.add_middleware(BodyLimit)

    app.add_middleware(
        context.RequestContextMiddleware,
        headers=security_headers(settings),
        exceptions={f"{API_PREFIX}/docs": DOCS_HEADERS},
    )

    def problem(code: int, reason: str) -> JSONResponse:
        return JSONResponse({"detail": reason}, status_code=code)

    @app.exception_handler(Denied)
    async def denied(_: Request, exc: Denied) -> JSONResponse:
        return problem(status.HTTP_403_FORBIDDEN, exc.reason)

    @app.exception_handler(SandboxRefused)
    async def sandbox_refused(_: Request, exc: SandboxRefused) -> JSONResponse:
        return problem(status.HTTP_403_FORBIDDEN, exc.reason)

    @app.exception_handler(UnknownSession)
    async def unknown_session(_: Request, exc: UnknownSession) -> JSONResponse:
        answer = problem(status.HTTP_401_UNAUTHORIZED, str(exc))
        answer.headers["WWW-Authenticate"] = "Bearer"
        return answer

    @app.exception_handler(CodeTooLarge)
    async def too_large(_: Request, exc: CodeTooLarge) -> JSONResponse:
        return problem(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))

    @app.exception_handler(NotQualified)
    async def not_qualified(_: Request, exc: NotQualified) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "reasons": list(exc.reasons)},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(FeedbackRefused)
    async def feedback_refused(_: Request, exc: FeedbackRefused) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "reasons": list(exc.reasons)},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(WorkflowError)
    async def not_now(_: Request, exc: WorkflowError) -> JSONResponse:
        return problem(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(PdfError)
    async def no_pdf(_: Request, exc: PdfError) -> JSONResponse:
        return problem(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))

    @app.exception_handler(AttachmentRefused)
    async def not_a_document(_: Request, exc: AttachmentRefused) -> JSONResponse:
        return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))

    @app.exception_handler(IdentityError)
    async def refused(_: Request, exc: IdentityError) -> JSONResponse:
        code = {NotFound: 404, Conflict: 409}.get(type(exc), 422)
        return problem(code, str(exc))

    @app.exception_handler(UploadRejected)
    async def rejected(_: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.problems}, status_code=422)

    @app.exception_handler(LedgerError)
    async def unrecorded(request: Request, exc: LedgerError) -> Response:
        log.error("the ledger refused a write: %s", exc)  # fail closed: nothing was done
        reason = "the audit ledger is unavailable; nothing was changed"
        if not request.url.path.startswith(API_PREFIX):  # a console page
            return web.problem_page(request, web.LEDGER_DOWN, reason, 503)
        return problem(status.HTTP_503_SERVICE_UNAVAILABLE, reason)

    return app
