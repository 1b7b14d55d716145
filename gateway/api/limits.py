"""A ceiling on request bodies, enforced before any handler reads them.

A declared ``Content-Length`` above the limit is refused at once; a body sent without
one (chunked) is counted as it arrives and refused as soon as it passes the limit. The
answer is 413 with a reason, and the handler never runs. Uploads (the paths ``uploads``
matches) have a ceiling of their own, far higher, since they stream to disk.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: JSON requests; uploads get their own routes
DEFAULT_MAX_UPLOAD = 64 << 30  # 64 GiB
# Uploads, from the API and the console: datasets' versions, applications' documents, the
# files of exports (their own routes stop reading at their own limits).
UPLOADS = re.compile(
    r"^(/api/v1/datasets|/catalog)/[^/]+/versions$|^(/api/v1)?/applications/[^/]+/attachments$"
    r"|^/api/v1/sandbox/exports/[^/]+/files/[0-9]+$"
)


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY,
        *,
        uploads: re.Pattern[str] = UPLOADS,
        max_upload: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if self.uploads.match(scope["path"]) else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now; the handler sees the client gone and stops reading.
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after a refusal, whatever the app still says is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body: Any = {"detail": f"the request body is larger than {limit:,} bytes"}
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
