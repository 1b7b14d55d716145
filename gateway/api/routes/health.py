"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy import text

from gateway.api.deps import Public, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health", dependencies=[Depends(Public())])
def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/ready", dependencies=[Depends(Public())])
def ready(found: ServicesDep, response: Response) -> dict[str, Any]:
    """The database answers and the ledger takes writes (its lock can be taken)."""
    checks: dict[str, str] = {}
    try:
        with found.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"failed: {type(exc).__name__}"
    checks["ledger"] = "ok" if found.ledger.path.joinpath("LEDGER.json").is_file() else "missing"
    ok = all(value == "ok" for value in checks.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ok" if ok else "unavailable", "checks": checks}
