"""Real HTTP endpoints on 127.0.0.1 for tests of code that calls the gateway: a
:class:`JsonServer` keeps every request and answers as the test says; :class:`Endpoint`
is the executed-code record's, which takes and keeps JSON bodies."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (method, path, headers, body) -> (status, JSON answer or None for no body)
Respond = Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]
Answer = Callable[[dict[str, str], dict[str, Any]], tuple[int, Any]]


class JsonServer:
    """Answers POST and PUT with ``respond``'s status and JSON; ``base`` is its address."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                self._answer()

            def do_PUT(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, payload = server.respond(self.command, self.path, dict(self.headers), body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Endpoint(JsonServer):
    """The executed-code record: keeps every request's headers and JSON body."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        super().__init__(self._respond)
        self.url = f"{self.base}/api/executions"

    def _respond(self, _: str, __: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unreadable": raw.decode(errors="replace")}
        self.received.append((headers, body))
        return self.answer(headers, body)
