"""Export requests from the sandbox, and the server's download paths closed.

A Jupyter server extension of the sandbox's trusted server (``ServerApp.jpserver_extensions``,
set by :func:`sandbox.kernel.kernelspec.server_config`). Files leave a sandbox only as an
export request, which the gateway checks and people review:

- :class:`OutboxWatcher` takes each request a notebook's
  :func:`sandbox.notebook.request_export` writes into the workspace's outbox
  (:mod:`sandbox.notebook.outbox`), once, and writes the answer beside it;
- ``GET /sbx/exports`` is a page to choose workspace files and describe them without
  code; ``POST /sbx/exports`` (:class:`ExportsHandler`) takes the same request from it,
  in the browser's own authenticated session, ``{"files": [...], "description": "..."}``,
  and answers ``201`` with the export, or an error status with ``{"message": reason}``:
  ``400`` the request itself, ``422`` the gateway refused it (its detail), ``502`` the
  gateway failed or cannot be reached, ``503`` exports are not configured.

Both go through :class:`WorkspaceExports`: :func:`open_export_files` opens each file
beneath the workspace without following a link and hashes it, and
:class:`GatewayExports` sends it to the gateway with the session's token (the one
``SBX_RECORD_URL`` and ``SBX_RECORD_TOKEN`` give the code record):

1. ``POST <api>/sandbox/exports`` announces the description and each file's name, size
   and SHA-256, and answers ``201`` with the export's id;
2. ``PUT <api>/sandbox/exports/<id>/files/<n>`` sends file ``n``'s bytes (``204``);
3. ``POST <api>/sandbox/exports/<id>/submit`` runs the checks and answers ``200`` with
   the status, the findings and the export's page in the console.

A file is read from the descriptor it was hashed from and hashed again as it is sent: a
change in between (the kernel can write the workspace) stops the export before it is
submitted, and the gateway checks the hash of what it received as well.

Every other route that would hand a workspace file's bytes to the browser answers ``403``
(:data:`REFUSAL`): ``/files/`` (the server config's ``ContentsManager.files_handler_class``
is :class:`DownloadRefused`), ``/nbconvert/`` and ``/view/`` (handlers of this extension,
which take precedence over the server's own), and the contents API's binary
(``base64``) content (:class:`ContentsWithoutBinaries`). Text and notebooks still open
through the contents API, and uploads still arrive.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import json
import logging
import os
import re
import stat
import threading
import urllib.error
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.services.contents import handlers as contents_handlers
from jupyter_server.utils import url_path_join
from tornado import web

from sandbox.kernel.export_page import render_page, workspace_files
from sandbox.kernel.record import MAX_ANSWER_BYTES, MAX_REASON_CHARS, BearerClient, error_field
from sandbox.notebook.outbox import (
    MAX_TOTAL_BYTES,
    OUTBOX,
    REQUEST_FILE,
    TAKEN_FILE,
    ExportAnswer,
    ExportRequest,
    ExportRequestError,
    ExportResult,
    answer_file,
    check_description,
    check_names,
    open_folder,
    read_json,
    request_file,
    taken_file,
    write_json,
)

RECORD_PATH = "/sandbox/executions"  # SBX_RECORD_URL is <api> followed by it
REFUSAL = (
    "Files leave the sandbox only through an export request, which the platform checks "
    "and people review: in a notebook, `from sandbox.notebook import request_export`."
)
NOT_CONFIGURED = "exports are not configured in this sandbox"
EXPORT_ID = re.compile(r"[0-9a-f]{32}")
BLOCK_BYTES = 1 << 20
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the workspace's files
@dataclass(frozen=True)
class ExportFile:
    """A file of an export as the gateway is told of it."""

    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.size, "sha256": self.sha256}


class FileChanged(Exception):
    """A file was changed between being hashed and being sent."""


class SentFile:
    """File ``descriptor`` from its start as a stream of ``size`` bytes, hashed as it is
    read; raises :class:`FileChanged` if it ends early."""

    def __init__(self, descriptor: int, size: int) -> None:
        os.lseek(descriptor, 0, os.SEEK_SET)
        self._descriptor = descriptor
        self._left = size
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        block = os.read(self._descriptor, self._left if size < 0 else min(size, self._left))
        if not block:
            raise FileChanged
        self._left -= len(block)
        self._digest.update(block)
        return block


class WorkspaceFiles:
    """Files of the workspace open for an export, each measured and hashed once, and sent
    from the same open file. A context manager: leaving it closes them."""

    def __init__(self, files: Sequence[ExportFile], descriptors: Sequence[int]) -> None:
        self.files = tuple(files)
        self._descriptors = list(descriptors)

    def stream(self, n: int) -> SentFile:
        return SentFile(self._descriptors[n], self.files[n].size)

    def close(self) -> None:
        descriptors, self._descriptors = self._descriptors, []
        for descriptor in descriptors:
            os.close(descriptor)

    def __enter__(self) -> WorkspaceFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_export_files(root: Path, names: Sequence[str]) -> WorkspaceFiles:
    """Open files ``names`` of workspace ``root`` for an export: each a regular file whose
    every part is beneath ``root`` and no symbolic link, at most
    :data:`~sandbox.notebook.outbox.MAX_FILES` of them and
    :data:`~sandbox.notebook.outbox.MAX_TOTAL_BYTES` in all. Raises
    :class:`~sandbox.notebook.outbox.ExportRequestError` with the reason otherwise."""
    names = check_names(names)
    real_root = os.path.realpath(root)
    folder = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    files: list[ExportFile] = []
    descriptors: list[int] = []
    total = 0
    try:
        for name in names:
            descriptor = _open_beneath(folder, name)
            descriptors.append(descriptor)
            if os.path.realpath(os.path.join(real_root, name)) != os.path.join(real_root, name):
                raise ExportRequestError(f"{name}: its path leads through a symbolic link")
            size, sha256 = _measure(descriptor, name, MAX_TOTAL_BYTES - total)
            total += size
            files.append(ExportFile(name, size, sha256))
    except BaseException:
        for descriptor in descriptors:
            os.close(descriptor)
        raise
    finally:
        os.close(folder)
    return WorkspaceFiles(files, descriptors)


def _open_beneath(root: int, name: str) -> int:
    """``name`` opened part by part from folder ``root``, never through a link."""
    parts = name.split("/")
    folder = root
    try:
        for depth, part in enumerate(parts[:-1], start=1):
            try:
                inner = open_folder(folder, part)
            except FileNotFoundError:
                raise ExportRequestError(f"{name}: no such file in the workspace") from None
            except NotADirectoryError:
                where = "/".join(parts[:depth])
                raise ExportRequestError(f"{name}: {where} is a link or not a folder") from None
            if folder != root:
                os.close(folder)
            folder = inner
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            descriptor = os.open(parts[-1], flags, dir_fd=folder)
        except FileNotFoundError:
            raise ExportRequestError(f"{name}: no such file in the workspace") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ExportRequestError(f"{name}: a symbolic link; export the file") from None
            raise ExportRequestError(f"{name}: cannot be read ({error.strerror})") from None
    finally:
        if folder != root:
            os.close(folder)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ExportRequestError(f"{name}: not a regular file")
    return descriptor


def _measure(descriptor: int, name: str, room: int) -> tuple[int, str]:
    """The size and SHA-256 of open file ``descriptor``, if it holds at most ``room``
    bytes."""
    too_big = f"the files have more than {MAX_TOTAL_BYTES >> 20} MiB in all (at {name})"
    if os.fstat(descriptor).st_size > room:
        raise ExportRequestError(too_big)
    digest = hashlib.sha256()
    size = 0
    while block := os.read(descriptor, BLOCK_BYTES):
        size += len(block)
        if size > room:
            raise ExportRequestError(too_big)
        digest.update(block)
    return size, digest.hexdigest()


# ------------------------------------------------------------------ the gateway
class GatewayExports:
    """The gateway's export routes for sandboxes, at ``api`` (``<gateway>/api/v1``), with
    the session's token. Proxies are ignored and redirects refused (:class:`BearerClient`);
    the token appears in no message."""

    def __init__(self, api: str, token: str, timeout: float = 60) -> None:
        if not api.startswith(("http://", "https://")):
            raise ValueError("the gateway's API must be an http:// or https:// URL")
        if not token:
            raise ValueError("the gateway's export routes need the session's token")
        self.api = api.rstrip("/")
        self._token = token
        self._client = BearerClient(token, timeout)

    def __repr__(self) -> str:
        return f"GatewayExports({self.api!r})"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> GatewayExports:
        """From the code record's settings; :class:`ExportRequestError` (503) without
        them."""
        url = environ.get("SBX_RECORD_URL", "")
        token = environ.get("SBX_RECORD_TOKEN", "")
        if not url.endswith(RECORD_PATH) or not token:
            raise ExportRequestError(NOT_CONFIGURED, 503)
        try:
            return cls(url.removesuffix(RECORD_PATH), token)
        except ValueError:
            raise ExportRequestError(NOT_CONFIGURED, 503) from None

    def submit(self, description: str, files: WorkspaceFiles) -> ExportResult:
        """Announce, send and submit the export; its result, or
        :class:`ExportRequestError` with the gateway's detail."""
        base = f"{self.api}/sandbox/exports"
        announcement = {"description": description, "files": [f.to_dict() for f in files.files]}
        created = self._json(
            "announce the export", 201, lambda: self._client.call("POST", base, announcement)
        )
        export_id = created.get("id")
        if not isinstance(export_id, str) or not EXPORT_ID.fullmatch(export_id):
            raise ExportRequestError("the gateway's answer had no export id", 502)
        for n, file in enumerate(files.files):
            stream = files.stream(n)
            url = f"{base}/{export_id}/files/{n}"
            send = functools.partial(self._client.send, "PUT", url, stream, file.size)
            self._exchange(f"take {file.name}", 204, send)
            if stream.sha256 != file.sha256:
                raise ExportRequestError(f"{file.name} changed while it was sent; ask again", 409)
        answer = self._json(
            "submit the export",
            200,
            lambda: self._client.call("POST", f"{base}/{export_id}/submit"),
        )
        try:
            return ExportResult.from_dict(answer)
        except ValueError:
            raise ExportRequestError("the gateway's answer was not understood", 502) from None

    def _json(
        self, action: str, expected: int, call: Callable[[], tuple[int, bytes]]
    ) -> dict[str, Any]:
        answer = self._exchange(action, expected, call)
        try:
            data = json.loads(answer)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ExportRequestError("the gateway's answer was not understood", 502)
        return data

    def _exchange(self, action: str, expected: int, call: Callable[[], tuple[int, bytes]]) -> bytes:
        try:
            status, answer = call()
        except urllib.error.HTTPError as error:
            detail = error_field(error.read(MAX_ANSWER_BYTES))
            error.close()
            suffix = f": {detail}" if detail else ""
            reason = self._scrub(f"the gateway refused to {action} ({error.code}){suffix}")
            raise ExportRequestError(reason, 422 if error.code < 500 else 502) from None
        except FileChanged:
            raise ExportRequestError(f"a file changed while it was sent ({action})", 409) from None
        except (urllib.error.URLError, OSError) as error:
            cause = getattr(error, "reason", error)
            reason = self._scrub(f"the gateway cannot be reached ({cause})")
            raise ExportRequestError(reason, 502) from None
        if status != expected:
            raise ExportRequestError(f"the gateway answered {status} to {action}", 502)
        return answer

    def _scrub(self, reason: str) -> str:
        return reason.replace(self._token, "[token]")[: MAX_REASON_CHARS * 2]


class WorkspaceExports:
    """Export requests of one workspace ``root``, sent through ``gateway`` (``None`` when
    exports are not configured: every request is then refused with ``unavailable``)."""

    def __init__(
        self, root: Path, gateway: GatewayExports | None, unavailable: str = NOT_CONFIGURED
    ) -> None:
        self.root = Path(root)
        self.gateway = gateway
        self.unavailable = unavailable

    def request(self, files: object, description: object) -> ExportResult:
        """Check, read and send the export; its result, or :class:`ExportRequestError`."""
        names = check_names(files)
        text = check_description(description)
        if self.gateway is None:
            raise ExportRequestError(self.unavailable, 503)
        with open_export_files(self.root, names) as opened:
            result = self.gateway.submit(text, opened)
        log.info("export %s of %d file(s): %s", result.id, len(names), result.status)
        return result


# ------------------------------------------------------------------ the outbox
STOPPED = (
    "the sandbox's server stopped while it was sending this request: look for the export "
    "on the console's exports page before you ask again"
)


class OutboxWatcher:
    """Takes the requests in workspace ``root``'s outbox every ``interval`` seconds, one
    at a time, each once: it is renamed to ``<id>.taken`` before it is read, answered in
    ``<id>.answer.json`` and then removed. A request found taken was being sent when the
    server stopped; it is answered, not sent again."""

    def __init__(
        self,
        root: Path,
        exports: WorkspaceExports,
        interval: float = 1.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.exports = exports
        self.interval = interval
        self.log = logger or log
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sbx-outbox", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.scan()
            except Exception:
                self.log.exception("the export outbox could not be read")

    def scan(self) -> int:
        """Answer every request in the outbox now; how many there were."""
        try:
            folder = self._open_outbox()
        except FileNotFoundError:
            return 0
        except NotADirectoryError:
            if not self._warned:
                self.log.warning("~/%s is a link or not a folder: export requests wait", OUTBOX)
                self._warned = True
            return 0
        handled = 0
        try:
            for name in sorted(os.listdir(folder)):
                if (stale := TAKEN_FILE.fullmatch(name)) is not None:
                    self._answer(folder, stale["id"], ExportAnswer(stale["id"], error=STOPPED))
                elif (request := REQUEST_FILE.fullmatch(name)) is not None:
                    handled += self._take(folder, request["id"])
        finally:
            os.close(folder)
        return handled

    def _open_outbox(self) -> int:
        folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in OUTBOX.split("/"):
                inner = open_folder(folder, part)
                os.close(folder)
                folder = inner
        except BaseException:
            os.close(folder)
            raise
        return folder

    def _take(self, folder: int, request_id: str) -> int:
        try:
            os.rename(
                request_file(request_id),
                taken_file(request_id),
                src_dir_fd=folder,
                dst_dir_fd=folder,
            )
        except FileNotFoundError:  # withdrawn meanwhile
            return 0
        try:
            request = ExportRequest.from_dict(read_json(folder, taken_file(request_id)))
            if request.id != request_id:
                raise ExportRequestError("the request's id is not the one of its file")
            result = self.exports.request(request.files, request.description)
            answer = ExportAnswer(request_id, result)
        except ExportRequestError as error:
            answer = ExportAnswer(request_id, error=error.reason)
        except ValueError as error:
            answer = ExportAnswer(request_id, error=f"the request was not understood: {error}")
        except Exception:
            self.log.exception("export request %s failed", request_id)
            answer = ExportAnswer(request_id, error="the sandbox's server could not send it")
        self._answer(folder, request_id, answer)
        return 1

    def _answer(self, folder: int, request_id: str, answer: ExportAnswer) -> None:
        try:
            write_json(folder, answer_file(request_id), answer.to_dict())
        except OSError as error:
            self.log.warning("export request %s could not be answered: %s", request_id, error)
        name = taken_file(request_id)
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except OSError:  # a folder, say: out of the way, so it is not answered again
            try:
                os.rename(name, f".{name}.discarded", src_dir_fd=folder, dst_dir_fd=folder)
            except OSError:
                self.log.warning("export request %s cannot be removed", request_id)


# ------------------------------------------------------------------ handlers
class ExportsHandler(APIHandler):
    """``GET /sbx/exports``: the page to request one (:mod:`sandbox.kernel.export_page`);
    ``POST /sbx/exports``: an export request from the browser's session."""

    auth_resource = "contents"

    def initialize(self, exports: WorkspaceExports) -> None:
        self.exports = exports

    @web.authenticated
    @authorized
    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(None, workspace_files, self.exports.root)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(render_page(files))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.get_json_body()
        if not isinstance(body, dict):
            self._answer(400, {"message": 'send {"files": [...], "description": "..."}'})
            return
        loop = asyncio.get_running_loop()
        request = self.exports.request
        try:
            result = await loop.run_in_executor(
                None, request, body.get("files"), body.get("description")
            )
        except ExportRequestError as error:
            self._answer(error.status, {"message": error.reason})
            return
        self._answer(201, result.to_dict())

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, ensure_ascii=False))


class DownloadRefused(JupyterHandler):
    """Every request answered ``403`` with :data:`REFUSAL`: the server config's
    ``ContentsManager.files_handler_class`` (``/files/``), and ``/nbconvert/`` and
    ``/view/``. It says nothing of whether the file exists."""

    def initialize(self, **settings: Any) -> None:
        """Takes ``ContentsManager.files_handler_params`` and ignores them."""

    async def prepare(self) -> None:  # type: ignore[override]
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(None if self.request.method == "HEAD" else REFUSAL + "\n")


class NoExporters(APIHandler):
    """``GET /api/nbconvert``: no formats, so JupyterLab offers no "Export Notebook As"."""

    auth_resource = "nbconvert"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({}))


class ContentsWithoutBinaries(contents_handlers.ContentsHandler):
    """The contents API without binary content: a file asked for as ``base64``, or that
    can only be given so, is refused (``403``). Text files and notebooks open and save as
    before, and uploads still arrive (what they answer has no content)."""

    @web.authenticated
    @authorized
    async def get(self, path: str = "") -> None:
        if self.get_query_argument("format", default=None) == "base64":
            raise web.HTTPError(403, REFUSAL)
        await super().get(path)  # type: ignore[misc] # decorated, so typed loosely

    def _finish_model(self, model: dict[str, Any], location: bool = True) -> None:
        if model.get("format") == "base64" and model.get("content") is not None:
            raise web.HTTPError(403, REFUSAL)
        super()._finish_model(model, location)  # type: ignore[no-untyped-call]


def routes(exports: WorkspaceExports) -> list[tuple[Any, ...]]:
    """This extension's routes (before the server's base URL): they take precedence over
    the server's own. The contents API's routes come in the server's order, with
    :class:`ContentsWithoutBinaries` in place of its handler, so that the more specific
    ones (checkpoints, trust) still match first."""
    contents: list[tuple[Any, ...]] = []
    for route in contents_handlers.default_handlers:
        handler = route[1]
        if handler is contents_handlers.ContentsHandler:
            handler = ContentsWithoutBinaries
        contents.append((route[0], handler, *route[2:]))
    return [
        (r"/sbx/exports", ExportsHandler, {"exports": exports}),
        (r"/nbconvert/.*", DownloadRefused),
        (r"/api/nbconvert/?", NoExporters),
        (r"/view/.*", DownloadRefused),
        *contents,
    ]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "sandbox.kernel.exports"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the routes and start the outbox's watcher, for the server's root folder."""
    root = Path(serverapp.contents_manager.root_dir)
    try:
        gateway: GatewayExports | None = GatewayExports.from_environ(os.environ)
    except ExportRequestError as error:
        serverapp.log.warning("sbx: %s (SBX_RECORD_URL and SBX_RECORD_TOKEN)", error.reason)
        gateway = None
    exports = WorkspaceExports(root, gateway)
    base_url = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [(url_path_join(base_url, pattern), *rest) for pattern, *rest in routes(exports)],
    )
    watcher = OutboxWatcher(root, exports, logger=serverapp.log)
    serverapp.web_app.settings["sbx_outbox"] = watcher
    watcher.start()
    serverapp.log.info("sbx: export requests from %s/%s and POST /sbx/exports", root, OUTBOX)
