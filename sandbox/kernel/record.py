"""The executed-code record: what a sandboxed kernel is asked to run, written to the
platform's audit ledger before the kernel sees it.

:class:`Execution` is one request (a cell's code, or a value typed at an ``input()``
prompt); a :class:`Recorder` writes it and returns the ledger's :class:`Receipt`, or raises
:class:`NotRecorded` with a reason short enough to show the applicant. The auditing proxy
(:mod:`sandbox.kernel.proxy`) forwards a request only once its receipt is in hand.

:class:`HttpRecorder` is the production recorder: one ``POST`` per request to the
platform's recording endpoint, authenticated by a bearer token that only the trusted
server process holds. It uses the standard library alone, since it runs in the sandbox's
own Python environment.
"""

from __future__ import annotations

import enum
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MAX_CODE_BYTES = 48 * 1024  # the ledger keeps each cell whole; larger ones must be split
MAX_ANSWER_BYTES = 64 * 1024
MAX_REASON_CHARS = 200


class NotRecorded(Exception):
    """The request could not be recorded, so it must not run; ``reason`` says why, in words
    the applicant may see (never a credential)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Kind(enum.StrEnum):
    EXECUTE = "execute"  # a cell's code, from an execute_request
    INPUT = "input"  # a value typed at a prompt, from an input_reply


@dataclass(frozen=True)
class Execution:
    """One request to a kernel: ``kernel`` is the kernel's id, ``message`` the request's
    msg_id and ``session`` the Jupyter session it came from."""

    kernel: str
    message: str
    kind: Kind
    code: str
    session: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))  # "execute" and "input" too

    @property
    def code_bytes(self) -> bytes:
        try:
            return self.code.encode("utf-8")
        except UnicodeEncodeError:
            raise NotRecorded("the cell is not valid UTF-8 text") from None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.code_bytes).hexdigest()

    def to_dict(self) -> dict[str, str]:
        return {
            "kernel": self.kernel,
            "message": self.message,
            "kind": self.kind.value,
            "code": self.code,
            "session": self.session,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Execution:
        return cls(
            kernel=str(data["kernel"]),
            message=str(data["message"]),
            kind=Kind(data["kind"]),
            code=str(data["code"]),
            session=str(data.get("session", "")),
        )


@dataclass(frozen=True)
class Receipt:
    """The ledger's answer: the record's sequence number and the code's SHA-256."""

    seq: int
    sha256: str


class Recorder(Protocol):
    """Writes one execution to the ledger and returns its receipt. Raises
    :class:`NotRecorded` when it cannot; any other exception counts as not recorded too."""

    def record(self, execution: Execution) -> Receipt: ...


def ensure_recordable(execution: Execution) -> None:
    """Raise :class:`NotRecorded` for a request the ledger would not take whole."""
    size = len(execution.code_bytes)
    if size > MAX_CODE_BYTES:
        raise NotRecorded(f"cell too large to record ({size} bytes > {MAX_CODE_BYTES}); split it")


class Readable(Protocol):
    """A body sent in blocks: ``read(size)`` gives at most ``size`` bytes, ``b""`` at the
    end."""

    def read(self, size: int = -1, /) -> bytes: ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the token goes to the configured endpoint and nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class BearerClient:
    """JSON (or a file's bytes, :meth:`send`) over HTTP with a bearer token, from inside
    the sandbox's trusted server: proxies from the environment are ignored and a redirect
    is an error, so the token goes to the configured endpoint and nowhere else."""

    def __init__(self, token: str, timeout: float = 10) -> None:
        self._token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def __repr__(self) -> str:  # never the token
        return "BearerClient()"

    def call(
        self, method: str, url: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """The answer's status and (at most :data:`MAX_ANSWER_BYTES` of) body; raises
        :class:`urllib.error.HTTPError` for 4xx and 5xx and :class:`OSError` when the
        endpoint cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        return self._open(method, url, data, {"Content-Type": "application/json"})

    def send(
        self,
        method: str,
        url: str,
        stream: Readable,
        length: int,
        content_type: str = "application/octet-stream",
    ) -> tuple[int, bytes]:
        """As :meth:`call`, with ``length`` bytes read from ``stream`` as the body, in
        blocks (``Content-Length`` is ``length``)."""
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        return self._open(method, url, stream, headers)

    def _open(
        self, method: str, url: str, data: bytes | Readable | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the endpoint must be an http:// or https:// URL")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                **headers,
                "Accept": "application/json",
            },
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return response.status, response.read(MAX_ANSWER_BYTES)


class HttpRecorder:
    """Records through the platform's endpoint: ``POST url`` with the JSON body
    ``{"kernel", "message", "kind", "code"}`` and ``Authorization: Bearer <token>``; the
    endpoint answers ``201`` with ``{"seq", "sha256"}``, and the SHA-256 must be the one of
    the code sent. Proxies from the environment are ignored and redirects refused."""

    def __init__(self, url: str, token: str, timeout: float = 10) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the recording endpoint must be an http:// or https:// URL")
        if not token:
            raise ValueError("the recording endpoint needs a token")
        self.url = url
        self._token = token
        self.timeout = timeout
        self._client = BearerClient(token, timeout)

    def __repr__(self) -> str:
        return f"HttpRecorder({self.url!r})"

    def record(self, execution: Execution) -> Receipt:
        ensure_recordable(execution)
        body = {
            "kernel": execution.kernel,
            "message": execution.message,
            "kind": execution.kind.value,
            "code": execution.code,
        }
        try:
            status, answer = self._client.call("POST", self.url, body)
        except urllib.error.HTTPError as error:
            detail = error_field(error.read(MAX_ANSWER_BYTES))
            error.close()
            suffix = f": {detail}" if detail else ""
            raise NotRecorded(self._scrub(f"the ledger refused ({error.code}){suffix}")) from None
        except (urllib.error.URLError, OSError) as error:
            cause = getattr(error, "reason", error)
            raise NotRecorded(self._scrub(f"the ledger is unreachable ({cause})")) from None
        if status != 201:
            raise NotRecorded(f"the ledger answered {status} instead of 201")
        return self._receipt(answer, execution)

    def _receipt(self, answer: bytes, execution: Execution) -> Receipt:
        try:
            data = json.loads(answer)
            receipt = Receipt(seq=data["seq"], sha256=data["sha256"])
        except (ValueError, TypeError, KeyError):
            raise NotRecorded("the ledger's answer was not understood") from None
        if not isinstance(receipt.seq, int) or receipt.sha256 != execution.sha256:
            raise NotRecorded("the ledger recorded something else than the cell (SHA-256)")
        return receipt

    def _scrub(self, reason: str) -> str:
        return reason.replace(self._token, "[token]")[:MAX_REASON_CHARS]


def error_field(body: bytes, key: str = "detail") -> str:
    """Field ``key`` of a JSON error body, on one line and shortened; empty when there is
    none."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    detail = data.get(key) if isinstance(data, dict) else None
    if detail is None:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    return " ".join(text.split())[:MAX_REASON_CHARS]
