"""The gateway's client of JupyterHub's REST API: it asks the hub to stop a sandbox at
once when its grant is suspended (the hub's own poll of the session would stop it within
``sandbox.poll_seconds`` anyway). The transport is injectable (``httpx.MockTransport`` in
tests)."""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

log = logging.getLogger("sbx.gateway")
TIMEOUT = 5.0  # seconds: a suspension does not wait long for the hub


class HubClient:
    def __init__(
        self, api_url: str, token: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(
            headers={"Authorization": f"token {token}"}, timeout=TIMEOUT, transport=transport
        )

    def stop_server(self, user: str, server_name: str) -> bool:
        """Ask the hub to stop ``user``'s server ``server_name``; whether it agreed (204,
        202) or had none running (404). Failures are logged, not raised: the hub's poll
        stops the server anyway."""
        url = f"{self.api_url}/users/{quote(user, safe='')}/servers/{quote(server_name, safe='')}"
        try:
            answer = self._client.delete(url)
        except httpx.HTTPError as exc:
            log.warning("the hub could not be asked to stop %s/%s: %s", user, server_name, exc)
            return False
        if answer.status_code in (202, 204, 404):
            return True
        log.warning("the hub answered %s to stopping %s/%s", answer.status_code, user, server_name)
        return False

    def close(self) -> None:
        self._client.close()
