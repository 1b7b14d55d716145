"""The outbox: how a kernel without network asks the trusted server to send an export.

The kernel and the server share the workspace. The kernel writes a request into the
hidden folder :data:`OUTBOX` (``~/.sbx/outbox``), which JupyterLab does not show; the
server's exports extension (:mod:`sandbox.kernel.exports`) takes it, sends the files to
the gateway and writes the answer beside it. Every file there is JSON in UTF-8, written
whole to a hidden temporary name and then renamed, so a reader never sees half of one::

    <id>.json          the request (kernel):  {"version": 1, "id": "<32 hex>",
                       "files": ["results/table.csv", ...], "description": "...",
                       "created": "2025-01-31T09:00:00+00:00"}
    <id>.taken         the same request once the server has claimed it (never sent twice)
    <id>.answer.json   the answer (server):   {"version": 1, "request": "<id>",
                       "export": {"id", "status", "findings", "blocking", "url"}}
                       or                      {"version": 1, "request": "<id>",
                       "error": "why it was not sent"}

The kernel removes the answer once it has read it. This module is the format and the
checks both sides make (and the gateway's, on what it receives); it runs in the kernel, so
it needs no more than the standard library and the bundle format's name rule.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.bundle import name_problem

OUTBOX = ".sbx/outbox"  # relative to the workspace
FORMAT_VERSION = 1
MAX_FILES = 50
MAX_TOTAL_BYTES = 100 << 20
MAX_DESCRIPTION_CHARS = 4000
MAX_OUTBOX_FILE_BYTES = 1 << 20  # a request or an answer
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
REQUEST_FILE = re.compile(r"(?P<id>[0-9a-f]{32})\.json")
TAKEN_FILE = re.compile(r"(?P<id>[0-9a-f]{32})\.taken")


class ExportRequestError(Exception):
    """The export request was not sent; ``reason`` says why, in words the applicant may
    see, and ``status`` is the HTTP status that says the same (400: the request itself)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def request_file(request_id: str) -> str:
    return f"{request_id}.json"


def taken_file(request_id: str) -> str:
    return f"{request_id}.taken"


def answer_file(request_id: str) -> str:
    return f"{request_id}.answer.json"


def check_name(name: object) -> str:
    """``name`` if it names a file of the workspace as a release bundle carries it
    (:func:`audit.bundle.name_problem`: a relative POSIX path without ``.``, ``..`` or
    empty parts, backslashes or control characters, of at most 255 characters)."""
    problem = name_problem(name)
    if problem is not None:
        raise ExportRequestError(f"{problem}: give the path relative to the workspace")
    return str(name)  # name_problem refuses anything but text


def check_names(names: object) -> tuple[str, ...]:
    """The names of an export: 1 to :data:`MAX_FILES`, each one :func:`check_name`, none
    twice (even by case) and none inside another."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ExportRequestError("give the files as a list of names")
    if not 1 <= len(names) <= MAX_FILES:
        raise ExportRequestError(f"an export has 1 to {MAX_FILES} files, not {len(names)}")
    checked = tuple(check_name(name) for name in names)
    folded = [name.casefold() for name in checked]
    if len(set(folded)) != len(folded):
        raise ExportRequestError("a file is named twice (perhaps in another case)")
    for name, fold in zip(checked, folded, strict=True):
        if any(other.startswith(fold + "/") for other in folded):
            raise ExportRequestError(f"{name!r} is a file and a folder of another file")
    return checked


def check_description(text: object) -> str:
    """The description, stripped: 1 to :data:`MAX_DESCRIPTION_CHARS` characters, without
    control characters other than line breaks and tabs."""
    if not isinstance(text, str):
        raise ExportRequestError("the description must be text")
    text = text.strip()
    if not text:
        raise ExportRequestError("say what the files are and why they are safe to release")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ExportRequestError(
            f"the description has at most {MAX_DESCRIPTION_CHARS} characters, not {len(text)}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in text):
        raise ExportRequestError("the description may not contain control characters")
    return text


@dataclass(frozen=True)
class ExportRequest:
    """One request in the outbox."""

    id: str
    files: tuple[str, ...]
    description: str
    created: str = ""

    def __post_init__(self) -> None:
        if not REQUEST_ID.fullmatch(self.id):
            raise ExportRequestError("a request's id is 32 hexadecimal digits")
        object.__setattr__(self, "files", check_names(self.files))
        object.__setattr__(self, "description", check_description(self.description))

    @classmethod
    def new(cls, files: Sequence[str], description: str, created: str = "") -> ExportRequest:
        return cls(secrets.token_hex(16), tuple(files), description, created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "id": self.id,
            "files": list(self.files),
            "description": self.description,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportRequest:
        if data.get("version") != FORMAT_VERSION:
            raise ExportRequestError(f"the request is not of version {FORMAT_VERSION}")
        files = data.get("files")
        if not isinstance(files, list):
            raise ExportRequestError("give the files as a list of names")
        return cls(
            id=str(data.get("id", "")),
            files=tuple(files),
            description=data.get("description"),  # type: ignore[arg-type] # checked
            created=str(data.get("created", "")),
        )


@dataclass(frozen=True)
class ExportResult:
    """The gateway's answer to a submitted export: ``status`` is ``review`` (waiting for
    people) or ``blocked`` (an automated check stops it); ``url`` is the export's page in
    the console."""

    id: str
    status: str
    findings: int
    blocking: int
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "findings": self.findings,
            "blocking": self.blocking,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportResult:
        """Raises :class:`ValueError` unless ``data`` holds all five, of the right types
        (it may hold more)."""
        result = cls(
            id=data.get("id"),  # type: ignore[arg-type] # checked below
            status=data.get("status"),  # type: ignore[arg-type]
            findings=data.get("findings"),  # type: ignore[arg-type]
            blocking=data.get("blocking"),  # type: ignore[arg-type]
            url=data.get("url"),  # type: ignore[arg-type]
        )
        texts = (result.id, result.status, result.url)
        counts = (result.findings, result.blocking)
        if not all(isinstance(value, str) for value in texts) or not all(
            isinstance(value, int) and not isinstance(value, bool) for value in counts
        ):
            raise ValueError("an export result has id, status, findings, blocking and url")
        return result

    def summary(self) -> str:
        """The result in a few lines, for the notebook."""
        if self.status == "blocked":
            state = "blocked by the automated checks: see the findings in the console"
        elif self.status == "review":
            state = "waiting for review by two people"
        else:
            state = self.status
        return (
            f"Export {self.id}: {state}.\n"
            f"  findings: {self.findings} ({self.blocking} blocking)\n"
            f"  follow it in the console: {self.url}"
        )


@dataclass(frozen=True)
class ExportAnswer:
    """The server's answer to request ``request``: the export, or why there is none."""

    request: str
    result: ExportResult | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"version": FORMAT_VERSION, "request": self.request}
        if self.result is not None:
            answer["export"] = self.result.to_dict()
        else:
            answer["error"] = self.error or "the export was not sent"
        return answer

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportAnswer:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"the answer is not of version {FORMAT_VERSION}")
        export = data.get("export")
        result = ExportResult.from_dict(export) if isinstance(export, Mapping) else None
        return cls(str(data.get("request", "")), result, str(data.get("error", "")))


def write_json(folder: int, name: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as ``name`` in the folder open as ``folder``, atomically: to a new
    hidden temporary file first (never through a link), then renamed over ``name``."""
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    temporary = f".{name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o600, dir_fd=folder)
    try:
        with open(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=folder)
        except OSError:
            pass
        raise


def read_json(folder: int, name: str) -> dict[str, Any]:
    """File ``name`` of the folder open as ``folder`` as a JSON object: a regular file (not
    a link, not a pipe) of at most :data:`MAX_OUTBOX_FILE_BYTES`. Raises
    :class:`FileNotFoundError` when it is not there and :class:`ValueError` when it is not
    such a file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(name, flags, dir_fd=folder)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ValueError(f"{name} cannot be opened ({error.strerror})") from None
    with open(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{name} is not a regular file")
        raw = handle.read(MAX_OUTBOX_FILE_BYTES + 1)
    if len(raw) > MAX_OUTBOX_FILE_BYTES:
        raise ValueError(f"{name} is larger than {MAX_OUTBOX_FILE_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{name} is not JSON in UTF-8") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} is not a JSON object")
    return data


def open_folder(parent: int | str, name: str) -> int:
    """Open folder ``name`` of ``parent`` (a folder's descriptor or path) without following
    a link; :class:`NotADirectoryError` if it is a link or not a folder."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if isinstance(parent, int):
            return os.open(name, flags, dir_fd=parent)
        return os.open(os.path.join(parent, name), flags)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise NotADirectoryError(f"{name} is a link or not a folder") from None
