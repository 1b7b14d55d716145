"""The console's pages, one router per area."""

from __future__ import annotations

from gateway.web.pages import (
    agreements,
    applications,
    auth,
    catalog,
    grants,
    home,
    organizations,
)

ROUTERS = (
    auth.router,
    home.router,
    organizations.router,
    catalog.router,
    grants.router,
    applications.router,
    agreements.router,
)
