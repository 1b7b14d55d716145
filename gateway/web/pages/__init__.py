"""The console's pages, one router per area."""

from __future__ import annotations

from gateway.web.pages import auth, catalog, home, organizations

ROUTERS = (auth.router, home.router, organizations.router, catalog.router)
