"""Organization and user administration: thin pages over the identity service.

Each form posts to its own route, which declares the permission it needs; the service
checks again (policy, separation of duties, self-administration) and records the change.
After a change the browser is redirected to the page it came from with a notice chosen
from :data:`NOTICES` (never text from the request, so nothing can be reflected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import RedirectResponse, Response

from gateway.api.deps import ServicesDep
from gateway.authz import Denied
from gateway.db.models import (
    OrganizationStatus,
    OrganizationType,
    UserStatus,
    VerificationStatus,
)
from gateway.identity.model import Conflict, IdentityError, NotFound, can_administer
from gateway.web.deps import Page, PageRefused, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.home import ORGANIZATION_TYPES, ROLE_NAMES
from gateway.web.render import gettext_for, render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 20

NOTICES = {
    "organization.created": N_("The organization was registered."),
    "organization.status": N_("The organization's status was changed."),
    "organization.verification": N_("The real-name verification was recorded."),
    "organization.flag": N_("The dishonesty flag was changed."),
    "role.granted": N_("The role was granted."),
    "role.revoked": N_("The role was revoked."),
    "user.status": N_("The account's status was changed."),
    "user.unlocked": N_("The account was unlocked."),
}
STATUS_NAMES = {
    "active": N_("Active"),
    "suspended": N_("Suspended"),
    "disabled": N_("Disabled"),
    "unverified": N_("Not verified"),
    "verified": N_("Verified"),
    "rejected": N_("Rejected"),
}

ReadOrganizations = Annotated[Viewer, Depends(Page("organization", "read"))]
CreateOrganization = Annotated[Viewer, Depends(Page("organization", "create"))]
UpdateOrganization = Annotated[Viewer, Depends(Page("organization", "update"))]
SuspendOrganization = Annotated[Viewer, Depends(Page("organization", "suspend"))]
CreateUser = Annotated[Viewer, Depends(Page("user", "create"))]
GrantRole = Annotated[Viewer, Depends(Page("role", "grant"))]
RevokeRole = Annotated[Viewer, Depends(Page("role", "revoke"))]
LockUser = Annotated[Viewer, Depends(Page("user", "lock"))]
ResetPassword = Annotated[Viewer, Depends(Page("user", "reset_password"))]
Reason = Annotated[str, Form(max_length=500)]


def not_found(request: Request, viewer: Viewer, reason: str | None, code: int) -> Response:
    heading = N_("Not found")
    return render(
        request, "problem.html", viewer=viewer, heading=heading, reason=reason, status_code=code
    )


def _back(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(
        f"{path}?{urlencode({'notice': notice})}", status_code=status.HTTP_303_SEE_OTHER
    )


def _attempt(action: Callable[[], Any]) -> tuple[Any, str | None, int]:
    """Run a service call: ``(result, error message, status)``. A refusal by policy or
    duty is answered with the refusal page (it is recorded by the service)."""
    try:
        return action(), None, status.HTTP_200_OK
    except Denied as exc:
        raise PageRefused(status.HTTP_403_FORBIDDEN, exc.reason) from None
    except NotFound as exc:
        return None, str(exc), status.HTTP_404_NOT_FOUND
    except Conflict as exc:
        return None, str(exc), status.HTTP_409_CONFLICT
    except IdentityError as exc:
        return None, str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT


# ---------------------------------------------------------------------- organizations
@router.get("/organizations")
def organizations(
    request: Request,
    found: ServicesDep,
    viewer: ReadOrganizations,
    q: Annotated[str, Query(max_length=100)] = "",
    type: Annotated[OrganizationType | None, Query()] = None,  # noqa: A002
    state: Annotated[OrganizationStatus | None, Query(alias="status")] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    notice: str = "",
) -> Response:
    return _organizations_page(
        request, found, viewer, q=q, kind=type, state=state, page=page, notice=notice
    )


def _organizations_page(
    request: Request,
    found: ServicesDep,
    viewer: Viewer,
    *,
    q: str = "",
    kind: OrganizationType | None = None,
    state: OrganizationStatus | None = None,
    page: int = 1,
    notice: str = "",
    error: str | None = None,
    status_code: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    listing, list_error, _ = _attempt(
        lambda: found.identity.list_organizations(
            viewer.account.actor(),
            kind=kind,
            status=state,
            text=q or None,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    )
    return render(
        request,
        "organizations.html",
        viewer=viewer,
        listing=listing,
        q=q,
        kind=kind.value if kind else "",
        state=state.value if state else "",
        page=page,
        pages=max(1, -(-listing.total // PAGE_SIZE)) if listing else 1,
        organization_types=ORGANIZATION_TYPES,
        status_names=STATUS_NAMES,
        notice=NOTICES.get(notice),
        error=error or list_error,
        form=form or {},
        status_code=status_code,
        here="/organizations",
    )


@router.post("/organizations")
def create_organization(
    request: Request,
    found: ServicesDep,
    viewer: CreateOrganization,
    kind: Annotated[str, Form(alias="type", max_length=32)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    credit_code: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    _ = gettext_for(request)
    if kind not in ORGANIZATION_TYPES:
        created, error, code = None, _("Choose the type of organization."), 422
    else:
        created, error, code = _attempt(
            lambda: found.identity.create_organization(
                viewer.account.actor(),
                kind=OrganizationType(kind),
                name=name,
                credit_code=credit_code,
            )
        )
    if created is None:
        form = {"type": kind, "name": name, "credit_code": credit_code}
        return _organizations_page(request, found, viewer, error=error, status_code=code, form=form)
    return _back(f"/organizations/{created.id}", "organization.created")


@router.get("/organizations/{organization_id}")
def organization(
    request: Request,
    found: ServicesDep,
    viewer: ReadOrganizations,
    organization_id: str,
    notice: str = "",
) -> Response:
    return _organization_page(request, found, viewer, organization_id, notice=notice)


def _organization_page(
    request: Request,
    found: ServicesDep,
    viewer: Viewer,
    organization_id: str,
    *,
    notice: str = "",
    error: str | None = None,
    status_code: int = 200,
    created: tuple[Any, str] | None = None,
) -> Response:
    actor = viewer.account.actor()
    shown, missing, code = _attempt(lambda: found.identity.get_organization(actor, organization_id))
    if shown is None:
        return not_found(request, viewer, missing, code)
    users = None
    if found.authorizer.allows(actor, "user", "read"):
        users, _error, _code = _attempt(
            lambda: found.identity.list_users(actor, organization_id=shown.id, limit=100)
        )
    return render(
        request,
        "organization.html",
        viewer=viewer,
        organization=shown,
        users=users,
        assignable=sorted(
            found.authorizer.roles_for_organization_type(shown.type.value),
            key=list(ROLE_NAMES).index,
        ),
        administrable=can_administer(actor, organization_id=shown.id),
        can_administer=lambda user_id: can_administer(actor, user_id=user_id),
        now=found.identity.clock(),
        organization_types=ORGANIZATION_TYPES,
        role_names=ROLE_NAMES,
        status_names=STATUS_NAMES,
        notice=NOTICES.get(notice),
        error=error,
        created=created,
        status_code=status_code,
        here=f"/organizations/{shown.id}",
    )


def _organization_change(
    request: Request,
    found: ServicesDep,
    viewer: Viewer,
    organization_id: str,
    change: Callable[[], Any],
    notice: str,
) -> Response:
    done, error, code = _attempt(change)
    if error is not None:
        return _organization_page(
            request, found, viewer, organization_id, error=error, status_code=code
        )
    return _back(f"/organizations/{organization_id}", notice)


@router.post("/organizations/{organization_id}/status")
def set_organization_status(
    request: Request,
    found: ServicesDep,
    viewer: SuspendOrganization,
    organization_id: str,
    value: Annotated[OrganizationStatus, Form()],
    reason: Reason = "",
) -> Response:
    return _organization_change(
        request,
        found,
        viewer,
        organization_id,
        lambda: found.identity.set_organization_status(
            viewer.account.actor(), organization_id, value, reason
        ),
        "organization.status",
    )


@router.post("/organizations/{organization_id}/verification")
def set_organization_verification(
    request: Request,
    found: ServicesDep,
    viewer: UpdateOrganization,
    organization_id: str,
    value: Annotated[VerificationStatus, Form()],
    reason: Reason = "",
) -> Response:
    return _organization_change(
        request,
        found,
        viewer,
        organization_id,
        lambda: found.identity.set_organization_verification(
            viewer.account.actor(), organization_id, value, reason
        ),
        "organization.verification",
    )


@router.post("/organizations/{organization_id}/flag")
def set_organization_flag(
    request: Request,
    found: ServicesDep,
    viewer: UpdateOrganization,
    organization_id: str,
    value: Annotated[bool, Form()],
    reason: Reason = "",
) -> Response:
    return _organization_change(
        request,
        found,
        viewer,
        organization_id,
        lambda: found.identity.set_organization_flag(
            viewer.account.actor(), organization_id, value, reason
        ),
        "organization.flag",
    )


# ---------------------------------------------------------------------- users
@router.post("/organizations/{organization_id}/users")
def create_user(
    request: Request,
    found: ServicesDep,
    viewer: CreateUser,
    organization_id: str,
    username: Annotated[str, Form(max_length=64)] = "",
    display_name: Annotated[str, Form(max_length=200)] = "",
    roles: Annotated[list[str] | None, Form(max_length=6)] = None,
) -> Response:
    made, error, code = _attempt(
        lambda: found.identity.create_user(
            viewer.account.actor(),
            organization_id=organization_id,
            username=username,
            display_name=display_name,
            roles=tuple(roles or ()),
        )
    )
    # The one-time password is shown on this response only: no redirect, never stored.
    return _organization_page(
        request,
        found,
        viewer,
        organization_id,
        error=error,
        status_code=code if error else status.HTTP_201_CREATED,
        created=made,
    )


def _user_change(
    request: Request,
    found: ServicesDep,
    viewer: Viewer,
    user_id: str,
    change: Callable[[], Any],
    notice: str,
) -> Response:
    actor = viewer.account.actor()
    user, missing, code = _attempt(lambda: found.identity.get_user(actor, user_id))
    if user is None:
        return not_found(request, viewer, missing, code)
    done, error, code = _attempt(change)
    if error is not None:
        return _organization_page(
            request, found, viewer, user.organization_id, error=error, status_code=code
        )
    return _back(f"/organizations/{user.organization_id}", notice)


@router.post("/users/{user_id}/roles")
def grant_role(
    request: Request,
    found: ServicesDep,
    viewer: GrantRole,
    user_id: str,
    role: Annotated[str, Form(max_length=32)],
) -> Response:
    return _user_change(
        request,
        found,
        viewer,
        user_id,
        lambda: found.identity.grant_role(viewer.account.actor(), user_id, role),
        "role.granted",
    )


@router.post("/users/{user_id}/roles/{role}/revoke")
def revoke_role(
    request: Request, found: ServicesDep, viewer: RevokeRole, user_id: str, role: str
) -> Response:
    return _user_change(
        request,
        found,
        viewer,
        user_id,
        lambda: found.identity.revoke_role(viewer.account.actor(), user_id, role),
        "role.revoked",
    )


@router.post("/users/{user_id}/status")
def set_user_status(
    request: Request,
    found: ServicesDep,
    viewer: LockUser,
    user_id: str,
    value: Annotated[UserStatus, Form()],
    reason: Reason = "",
) -> Response:
    def change() -> Any:
        changed = found.identity.set_user_status(viewer.account.actor(), user_id, value, reason)
        if value is UserStatus.DISABLED:
            found.browser_sessions.end_all(user_id, reason="account disabled")
        return changed

    return _user_change(request, found, viewer, user_id, change, "user.status")


@router.post("/users/{user_id}/unlock")
def unlock_user(
    request: Request, found: ServicesDep, viewer: LockUser, user_id: str, reason: Reason = ""
) -> Response:
    return _user_change(
        request,
        found,
        viewer,
        user_id,
        lambda: found.identity.unlock_user(viewer.account.actor(), user_id, reason),
        "user.unlocked",
    )


@router.post("/users/{user_id}/password")
def reset_password(
    request: Request, found: ServicesDep, viewer: ResetPassword, user_id: str, reason: Reason = ""
) -> Response:
    actor = viewer.account.actor()
    user, missing, code = _attempt(lambda: found.identity.get_user(actor, user_id))
    if user is None:
        return not_found(request, viewer, missing, code)
    made, error, code = _attempt(lambda: found.identity.reset_password(actor, user_id, reason))
    if made is not None:
        found.browser_sessions.end_all(user_id, reason="password reset by an administrator")
    return _organization_page(
        request,
        found,
        viewer,
        user.organization_id,
        error=error,
        status_code=code,
        created=made,
    )
