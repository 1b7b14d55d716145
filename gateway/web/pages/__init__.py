"""The console's pages, one router per area."""

from __future__ import annotations

from gateway.web.pages import (
    agreements,
    alerts,
    applications,
    auth,
    catalog,
    evidence,
    grants,
    home,
    organizations,
    trail,
)

ROUTERS = (
    auth.router,
    home.router,
    organizations.router,
    catalog.router,
    grants.router,
    applications.router,
    agreements.router,
    trail.router,
    evidence.router,
    alerts.router,
)
