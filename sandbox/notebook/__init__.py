"""Helpers for applicants' notebooks in the sandbox.

:func:`request_export` asks for files of the workspace to leave the sandbox::

    from sandbox.notebook import request_export

    request_export(["results/table.csv", "report.html"], "what these are and why they are safe")

The kernel has no network: the request goes into the workspace's outbox
(:mod:`sandbox.notebook.outbox`), the sandbox's trusted server sends the files to the
gateway, and the answer comes back the same way. The gateway's automated checks read every
file, two people review the export, and the console shows where it is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sandbox.notebook.outbox import (
    MAX_TOTAL_BYTES,
    OUTBOX,
    ExportAnswer,
    ExportRequest,
    ExportRequestError,
    ExportResult,
    answer_file,
    check_description,
    check_name,
    check_names,
    open_folder,
    read_json,
    request_file,
    write_json,
)

__all__ = ["ExportRequestError", "ExportResult", "request_export"]

DEFAULT_TIMEOUT = 120.0
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 10.0

FileName = str | os.PathLike[str]


def request_export(
    files: FileName | Sequence[FileName],
    description: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    workspace: FileName | None = None,
) -> ExportResult:
    """Ask for ``files`` to leave the sandbox, with ``description``: what they are and why
    they are safe to release. Files are named relative to the workspace (``~``), or by
    their full path inside it; each must be a regular file, not a link, and together they
    are at most 50 files and 100 MiB.

    Waits up to ``timeout`` seconds for the platform's answer and returns it: the export's
    id, its status (``review`` or ``blocked``), the number of findings and its page in the
    console. Raises :class:`ExportRequestError` with the reason when the request is not
    valid or was not sent."""
    root = Path(os.path.abspath(workspace if workspace is not None else Path.home()))
    given = [files] if isinstance(files, str | os.PathLike) else list(files)
    names = check_names([workspace_name(root, item) for item in given])
    total = sum(file_size(root, name) for name in names)
    if total > MAX_TOTAL_BYTES:
        raise ExportRequestError(
            f"the files have {total / (1 << 20):.1f} MiB in all; an export has at most "
            f"{MAX_TOTAL_BYTES >> 20} MiB"
        )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    request = ExportRequest.new(names, check_description(description), created)
    outbox = open_outbox(root)
    try:
        write_json(outbox, request_file(request.id), request.to_dict())
        print(
            f"Export request {request.id}: {len(names)} file(s), {_size(total)}, handed to "
            "the sandbox's server.",
            flush=True,
        )
        try:
            answer = _wait_for_answer(outbox, request.id, timeout)
        except KeyboardInterrupt:  # the kernel was interrupted: withdraw if not yet taken
            with contextlib.suppress(OSError):
                os.unlink(request_file(request.id), dir_fd=outbox)
            raise
    finally:
        os.close(outbox)
    if answer.result is None:
        raise ExportRequestError(f"the export was not sent: {answer.error}", 502)
    print(answer.result.summary(), flush=True)
    return answer.result


def workspace_name(root: Path, item: FileName) -> str:
    """The name of ``item`` (relative to ``root``, or a full path inside it) relative to
    ``root``, as the gateway takes it."""
    text = os.fspath(item)
    if not isinstance(text, str):
        raise ExportRequestError(f"{text!r}: give file names as text")
    path = PurePosixPath(text)
    if path.is_absolute():
        try:
            path = path.relative_to(root.as_posix())
        except ValueError:
            raise ExportRequestError(f"{text}: only files of the workspace {root}") from None
    return check_name("" if str(path) == "." else path.as_posix())


def file_size(root: Path, name: str) -> int:
    """The size of file ``name`` of ``root``; :class:`ExportRequestError` unless it is a
    regular file reached without a symbolic link."""
    parts = name.split("/")
    path = root
    for depth, part in enumerate(parts, start=1):
        path = path / part
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            raise ExportRequestError(f"{name}: no such file in the workspace") from None
        except NotADirectoryError:
            where = "/".join(parts[: depth - 1])
            raise ExportRequestError(f"{name}: {where} is not a folder") from None
        if stat.S_ISLNK(status.st_mode):
            link = "/".join(parts[:depth])
            raise ExportRequestError(f"{name}: {link} is a symbolic link; export the file itself")
    if not stat.S_ISREG(status.st_mode):
        kind = "a folder: name the files in it" if stat.S_ISDIR(status.st_mode) else "special"
        raise ExportRequestError(f"{name}: not a regular file ({kind})")
    return status.st_size


def open_outbox(root: Path) -> int:
    """The outbox of workspace ``root``, made if need be, open as a folder descriptor."""
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in OUTBOX.split("/"):
            try:
                os.mkdir(part, 0o700, dir_fd=folder)
            except FileExistsError:
                pass
            try:
                inner = open_folder(folder, part)
            except NotADirectoryError:
                raise ExportRequestError(
                    f"~/{OUTBOX} is a link or not a folder: remove it and try again"
                ) from None
            os.close(folder)
            folder = inner
    except BaseException:
        os.close(folder)
        raise
    return folder


def _wait_for_answer(outbox: int, request_id: str, timeout: float) -> ExportAnswer:
    start = time.monotonic()
    progress = start + PROGRESS_SECONDS
    while True:
        answer = _read_answer(outbox, request_id)
        if answer is not None:
            return answer
        now = time.monotonic()
        if now - start >= timeout:
            return _give_up(outbox, request_id, timeout)
        if now >= progress:
            print(f"  waiting for the platform's answer: {now - start:.0f} s", flush=True)
            progress += PROGRESS_SECONDS
        time.sleep(POLL_SECONDS)


def _read_answer(outbox: int, request_id: str) -> ExportAnswer | None:
    name = answer_file(request_id)
    try:
        data = read_json(outbox, name)
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ExportRequestError(f"the server's answer was not understood ({error})", 502) from None
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=outbox)
    try:
        answer = ExportAnswer.from_dict(data)
    except ValueError as error:
        raise ExportRequestError(f"the server's answer was not understood ({error})", 502) from None
    if answer.request != request_id:
        raise ExportRequestError("the server answered another request", 502)
    return answer


def _give_up(outbox: int, request_id: str, timeout: float) -> ExportAnswer:
    """Withdraw the request if the server has not taken it yet."""
    try:
        os.unlink(request_file(request_id), dir_fd=outbox)
    except FileNotFoundError:  # taken: the server is sending it
        answer = _read_answer(outbox, request_id)
        if answer is not None:
            return answer
        raise ExportRequestError(
            f"no answer within {timeout:.0f} s, but the export is being sent (request "
            f"{request_id}): look for it on the console's exports page",
            504,
        ) from None
    raise ExportRequestError(
        f"the sandbox's server did not take the request within {timeout:.0f} s, so it was "
        "withdrawn and nothing was sent; try again, and restart the sandbox if it happens "
        "again",
        504,
    )


def _size(count: int) -> str:
    if count < 1 << 10:
        return f"{count} bytes"
    if count < 1 << 20:
        return f"{count / (1 << 10):.1f} KiB"
    return f"{count / (1 << 20):.1f} MiB"
