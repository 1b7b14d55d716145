"""Export requests from the sandbox: the outbox's format, the notebook helper's checks, the
server's reading of workspace files, and its client against a real HTTP server that keeps
the gateway's three-step contract."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.kernel.exports import (
    STOPPED,
    GatewayExports,
    OutboxWatcher,
    WorkspaceExports,
    open_export_files,
)
from sandbox.kernel.kernelspec import server_config
from sandbox.notebook import request_export
from sandbox.notebook.outbox import (
    MAX_FILES,
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
    read_json,
    request_file,
    taken_file,
    write_json,
)
from tests.recording import JsonServer

TOKEN = "session-token-0123456789"  # noqa: S105 - a test value
EXPORT_ID = "e" * 32


class FakeGateway(JsonServer):
    """The gateway's export routes on 127.0.0.1, as the contract says: it keeps every
    request (method, path, headers, body) and refuses a step when told to."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []
        self.announced: list[dict[str, Any]] = []
        self.refusals: dict[str, tuple[int, str]] = {}  # step -> status, detail
        self.check_hashes = True
        super().__init__(self._keep)
        self.api = f"{self.base}/api/v1"

    def _keep(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        self.received.append((method, path, {k.lower(): v for k, v in headers.items()}, body))
        return self.answer(method, path, headers, body)

    @property
    def record_url(self) -> str:
        return f"{self.api}/sandbox/executions"

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"detail": "no session has this token"}
        base = "/api/v1/sandbox/exports"
        if method == "POST" and path == base:
            step = "announce"
        elif method == "PUT" and (found := re.fullmatch(rf"{base}/(\w+)/files/(\d+)", path)):
            step = "file"
        elif method == "POST" and path == f"{base}/{EXPORT_ID}/submit":
            step = "submit"
        else:
            return 404, {"detail": "Not Found"}
        if step in self.refusals:
            status, detail = self.refusals[step]
            return status, {"detail": detail}
        if step == "announce":
            self.announced = json.loads(body)["files"]
            return 201, {"id": EXPORT_ID, "status": "uploading"}
        if step == "file":
            expected = self.announced[int(found[2])]
            if headers.get("Content-Type") != "application/octet-stream":
                return 415, {"detail": "send the bytes as application/octet-stream"}
            if self.check_hashes and hashlib.sha256(body).hexdigest() != expected["sha256"]:
                return 422, {"detail": "the file is not what was announced"}
            return 204, None
        return 200, {
            "id": EXPORT_ID,
            "status": "review",
            "findings": 2,
            "blocking": 0,
            "url": f"/exports/{EXPORT_ID}",
            "risk": "normal",
        }

    def steps(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _, _ in self.received]


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "results").mkdir(parents=True)
    (root / "results" / "table.csv").write_text("district,count\nnorth,120\n")
    (root / "report.html").write_bytes(b"<p>\x00binary-ish\xff</p>")
    return root


def exports_of(root: Path, gateway: FakeGateway) -> WorkspaceExports:
    return WorkspaceExports(root, GatewayExports(gateway.api, TOKEN))


def sparse(path: Path, size: int) -> None:
    path.touch()
    os.truncate(path, size)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def announced(root: Path, name: str) -> dict[str, Any]:
    data = (root / name).read_bytes()
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ------------------------------------------------------------------ the outbox's format
def test_the_outbox_request_and_answer_round_trip() -> None:
    request = ExportRequest.new(["results/table.csv", "report.html"], "  counts by district \n")
    assert re.fullmatch(r"[0-9a-f]{32}", request.id)
    data = request.to_dict()
    assert data == {
        "version": 1,
        "id": request.id,
        "files": ["results/table.csv", "report.html"],
        "description": "counts by district",
        "created": "",
    }
    assert ExportRequest.from_dict(json.loads(json.dumps(data))) == request
    assert request_file(request.id) == f"{request.id}.json"
    assert answer_file(request.id) == f"{request.id}.answer.json"
    assert taken_file(request.id) == f"{request.id}.taken"

    result = ExportResult(EXPORT_ID, "review", 2, 0, f"/exports/{EXPORT_ID}")
    sent = ExportAnswer(request.id, result).to_dict()
    assert sent == {"version": 1, "request": request.id, "export": result.to_dict()}
    assert ExportAnswer.from_dict(sent) == ExportAnswer(request.id, result)
    refused = ExportAnswer(request.id, error="the grant is suspended").to_dict()
    assert refused == {"version": 1, "request": request.id, "error": "the grant is suspended"}
    assert "blocked by the automated checks" in ExportResult("x", "blocked", 3, 1, "/e").summary()
    with pytest.raises(ValueError, match="id, status"):
        ExportResult.from_dict({"id": "x", "status": "review", "findings": "2"})
    with pytest.raises(ExportRequestError, match="version"):
        ExportRequest.from_dict({**data, "version": 2})


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x.csv",
        "a/../b",
        "a//b",
        "./x",
        "a/",
        "a\\b",
        "x\x00",
        "\x1b[0m",
        "a" * 256,
    ],
)
def test_file_names_must_be_plain_relative_paths(name: str) -> None:
    with pytest.raises(ExportRequestError):
        check_name(name)


def test_the_list_of_names_and_the_description_are_checked() -> None:
    assert check_names(["a.csv", "b/c.csv"]) == ("a.csv", "b/c.csv")
    for names, reason in [
        ("a.csv", "a list"),
        ([], "1 to 50"),
        ([f"f{n}" for n in range(MAX_FILES + 1)], "1 to 50"),
        (["a.csv", "a.csv"], "twice"),
        (["A.csv", "a.csv"], "twice"),
        (["a", "a/b.csv"], "a file and a folder"),
        ([1], "a string"),
    ]:
        with pytest.raises(ExportRequestError, match=reason):
            check_names(names)
    assert check_description(" why \n") == "why"
    for text, reason in [
        ("  ", "say what"),
        ("x" * 4001, "4000"),
        ("a\x07b", "control"),
        (3, "text"),
    ]:
        with pytest.raises(ExportRequestError, match=reason):
            check_description(text)


def test_outbox_files_are_written_whole_and_read_only_if_regular(tmp_path: Path) -> None:
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_json(folder, "a.json", {"version": 1})
        write_json(folder, "a.json", {"version": 1, "again": True})
        assert read_json(folder, "a.json") == {"version": 1, "again": True}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary left
        (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
        os.mkfifo(tmp_path / "pipe.json")
        (tmp_path / "list.json").write_text("[1]")
        for name in ["link.json", "pipe.json", "list.json"]:
            with pytest.raises(ValueError):
                read_json(folder, name)
        with pytest.raises(FileNotFoundError):
            read_json(folder, "missing.json")
    finally:
        os.close(folder)


# ------------------------------------------------------------------ the notebook helper
def outbox_names(root: Path) -> list[str]:
    outbox = root / OUTBOX
    return sorted(p.name for p in outbox.iterdir()) if outbox.exists() else []


def test_the_helper_refuses_what_cannot_be_exported(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.csv").write_text("secret\n")
    (workspace / "leak.csv").symlink_to(tmp_path / "outside.csv")
    (workspace / "linked").symlink_to(workspace / "results")
    sparse(workspace / "huge.bin", MAX_TOTAL_BYTES + 1)
    cases = [
        (["missing.csv"], "no such file"),
        (["leak.csv"], "symbolic link"),
        (["linked/table.csv"], "linked is a symbolic link"),
        (["results"], "not a regular file"),
        (["../outside.csv"], r"\.\. part"),
        ([str(tmp_path / "outside.csv")], "only files of the workspace"),
        (["huge.bin"], "at most 100 MiB"),
        (["results/table.csv", "results/table.csv"], "twice"),
    ]
    for files, reason in cases:
        with pytest.raises(ExportRequestError, match=reason):
            request_export(files, "a table", workspace=workspace, timeout=5)
    with pytest.raises(ExportRequestError, match="say what"):
        request_export(["report.html"], " ", workspace=workspace, timeout=5)
    assert outbox_names(workspace) == []  # nothing was asked


def answer_requests(root: Path, answer: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    """Play the server once: take the first request and write ``answer`` for it."""
    outbox = root / OUTBOX
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for path in outbox.glob("*.json") if outbox.exists() else []:
            if re.fullmatch(r"[0-9a-f]{32}\.json", path.name):
                request = json.loads(path.read_text())
                seen.append(request)
                path.unlink()
                folder = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    write_json(
                        folder, answer_file(request["id"]), {**answer, "request": request["id"]}
                    )
                finally:
                    os.close(folder)
                return
        time.sleep(0.02)


def test_the_helper_writes_a_request_and_shows_the_answer(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[dict[str, Any]] = []
    result = ExportResult(EXPORT_ID, "review", 2, 0, f"/exports/{EXPORT_ID}")
    server = threading.Thread(
        target=answer_requests,
        args=(workspace, {"version": 1, "export": result.to_dict()}, seen),
    )
    server.start()
    full_path = workspace / "report.html"
    got = request_export(
        ["results//table.csv", full_path], " counts \n", workspace=workspace, timeout=5
    )
    server.join()
    assert got == result
    [request] = seen
    assert request["files"] == ["results/table.csv", "report.html"]
    assert request["description"] == "counts"
    assert request["version"] == 1 and request["created"].endswith("+00:00")
    out = capsys.readouterr().out
    assert f"Export {EXPORT_ID}: waiting for review" in out
    assert "findings: 2 (0 blocking)" in out and f"/exports/{EXPORT_ID}" in out
    assert outbox_names(workspace) == []  # the answer was read and removed
    assert oct((workspace / OUTBOX).stat().st_mode & 0o777) == "0o700"

    server = threading.Thread(
        target=answer_requests,
        args=(workspace, {"version": 1, "error": "the grant is suspended"}, seen),
    )
    server.start()
    with pytest.raises(ExportRequestError, match="not sent: the grant is suspended"):
        request_export("report.html", "a page", workspace=workspace, timeout=5)
    server.join()


def test_an_untaken_request_is_withdrawn_when_the_wait_ends(workspace: Path) -> None:
    with pytest.raises(ExportRequestError, match="withdrawn and nothing was sent"):
        request_export(["report.html"], "a page", workspace=workspace, timeout=0.3)
    assert outbox_names(workspace) == []


def test_a_linked_outbox_is_refused(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (workspace / ".sbx").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ExportRequestError, match="link or not a folder"):
        request_export(["report.html"], "a page", workspace=workspace, timeout=1)
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ------------------------------------------------------------------ the server's reader
def test_the_server_reads_workspace_files_and_hashes_them(workspace: Path) -> None:
    with open_export_files(workspace, ["results/table.csv", "report.html"]) as opened:
        assert [f.to_dict() for f in opened.files] == [
            announced(workspace, "results/table.csv"),
            announced(workspace, "report.html"),
        ]
        stream = opened.stream(1)
        assert stream.read(4) + stream.read() == (workspace / "report.html").read_bytes()
        assert stream.sha256 == opened.files[1].sha256


def test_the_server_reader_refuses_links_escapes_and_excess(
    workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.csv").write_text("secret\n")
    (workspace / "leak.csv").symlink_to(tmp_path / "outside.csv")
    (workspace / "inner.csv").symlink_to(workspace / "report.html")
    (workspace / "up").symlink_to(tmp_path)
    os.mkfifo(workspace / "pipe")
    sparse(workspace / "big1.bin", 60 << 20)
    sparse(workspace / "big2.bin", 60 << 20)
    cases = [
        (["leak.csv"], "symbolic link"),
        (["inner.csv"], "symbolic link"),
        (["up/outside.csv"], "up is a link or not a folder"),
        (["../outside.csv"], r"\.\. part"),
        ([str(tmp_path / "outside.csv")], "relative to the workspace"),
        (["pipe"], "not a regular file"),
        (["results"], "not a regular file"),
        (["nothing.csv"], "no such file"),
        (["report.html/x"], "not a folder"),
        ([f"f{n}.csv" for n in range(MAX_FILES + 1)], "1 to 50"),
        (["big1.bin", "big2.bin"], "more than 100 MiB"),
    ]
    open_files = len(os.listdir("/proc/self/fd"))
    for names, reason in cases:
        with pytest.raises(ExportRequestError, match=reason):
            open_export_files(workspace, names)
    assert len(os.listdir("/proc/self/fd")) == open_files  # each refusal closed its files


# ------------------------------------------------------------------ the gateway's contract
def test_the_client_announces_sends_in_order_and_submits(
    workspace: Path, gateway: FakeGateway
) -> None:
    result = exports_of(workspace, gateway).request(
        ["results/table.csv", "report.html"], "counts by district"
    )
    assert result == ExportResult(EXPORT_ID, "review", 2, 0, f"/exports/{EXPORT_ID}")
    base = "/api/v1/sandbox/exports"
    assert gateway.steps() == [
        ("POST", base),
        ("PUT", f"{base}/{EXPORT_ID}/files/0"),
        ("PUT", f"{base}/{EXPORT_ID}/files/1"),
        ("POST", f"{base}/{EXPORT_ID}/submit"),
    ]
    announce, first, second, submit = gateway.received
    assert json.loads(announce[3]) == {
        "description": "counts by district",
        "files": [
            announced(workspace, "results/table.csv"),
            announced(workspace, "report.html"),
        ],
    }
    assert first[3] == (workspace / "results" / "table.csv").read_bytes()
    assert second[3] == (workspace / "report.html").read_bytes()
    assert second[2]["content-length"] == str(len(second[3]))
    assert second[2]["content-type"] == "application/octet-stream"
    assert submit[3] == b""
    assert all(
        headers["authorization"] == f"Bearer {TOKEN}" for _, _, headers, _ in gateway.received
    )


def test_the_gateways_refusal_is_surfaced_with_its_detail(
    workspace: Path, gateway: FakeGateway
) -> None:
    exports = exports_of(workspace, gateway)
    gateway.refusals["submit"] = (403, f"the grant is suspended (token {TOKEN})")
    with pytest.raises(ExportRequestError) as refused:
        exports.request(["report.html"], "a page")
    assert refused.value.status == 422
    assert refused.value.reason == (
        "the gateway refused to submit the export (403): the grant is suspended (token [token])"
    )
    gateway.refusals = {"file": (503, "the store is full")}
    with pytest.raises(ExportRequestError, match="take report.html \\(503\\): the store") as failed:
        exports.request(["report.html"], "a page")
    assert failed.value.status == 502
    gone = WorkspaceExports(workspace, GatewayExports("http://127.0.0.1:9/api/v1", TOKEN))
    with pytest.raises(ExportRequestError, match="cannot be reached"):
        gone.request(["report.html"], "a page")
    with pytest.raises(ExportRequestError, match="not configured") as unconfigured:
        GatewayExports.from_environ({"SBX_RECORD_URL": gateway.record_url})
    assert unconfigured.value.status == 503
    configured = GatewayExports.from_environ(
        {"SBX_RECORD_URL": gateway.record_url, "SBX_RECORD_TOKEN": TOKEN}
    )
    assert configured.api == gateway.api and TOKEN not in repr(configured)


def test_a_file_changed_after_hashing_is_not_submitted(
    workspace: Path, gateway: FakeGateway
) -> None:
    client = GatewayExports(gateway.api, TOKEN)
    page = workspace / "report.html"
    for check_hashes, reason in [
        (True, "not what was announced"),
        (False, "changed while it was sent"),
    ]:
        gateway.check_hashes = check_hashes
        with open_export_files(workspace, ["report.html"]) as opened:
            page.write_bytes(os.urandom(len(page.read_bytes())))  # in place, the same size
            with pytest.raises(ExportRequestError, match=reason):
                client.submit("a page", opened)
    assert ("POST", f"/api/v1/sandbox/exports/{EXPORT_ID}/submit") not in gateway.steps()


# ------------------------------------------------------------------ the outbox's watcher
def put_request(root: Path, request_id: str, text: str) -> None:
    outbox = root / OUTBOX
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / request_file(request_id)).write_text(text)


def test_the_watcher_sends_each_request_once_and_answers_it(
    workspace: Path, gateway: FakeGateway
) -> None:
    watcher = OutboxWatcher(workspace, exports_of(workspace, gateway))
    assert watcher.scan() == 0  # no outbox yet
    good = ExportRequest.new(["results/table.csv"], "counts")
    put_request(workspace, good.id, json.dumps(good.to_dict()))
    put_request(workspace, "b" * 32, "not json")
    put_request(
        workspace, "c" * 32, json.dumps({**good.to_dict(), "id": "c" * 32, "files": ["../x"]})
    )
    stale = "d" * 32
    (workspace / OUTBOX / taken_file(stale)).write_text("{}")  # the server stopped mid-way

    assert watcher.scan() == 3
    assert watcher.scan() == 0  # nothing is sent twice
    answers = {
        name: json.loads((workspace / OUTBOX / name).read_text())
        for name in outbox_names(workspace)
    }
    assert set(answers) == {answer_file(i) for i in [good.id, "b" * 32, "c" * 32, stale]}
    assert answers[answer_file(good.id)]["export"]["id"] == EXPORT_ID
    assert "not JSON" in answers[answer_file("b" * 32)]["error"]
    assert ".. part" in answers[answer_file("c" * 32)]["error"]
    assert answers[answer_file(stale)]["error"] == STOPPED
    assert [path for _, path in gateway.steps()] == [  # one export, once
        "/api/v1/sandbox/exports",
        f"/api/v1/sandbox/exports/{EXPORT_ID}/files/0",
        f"/api/v1/sandbox/exports/{EXPORT_ID}/submit",
    ]


def test_the_watcher_writes_no_token_and_ignores_a_linked_outbox(
    workspace: Path, gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.refusals["announce"] = (401, f"unknown token {TOKEN}")
    request = ExportRequest.new(["report.html"], "a page")
    put_request(workspace, request.id, json.dumps(request.to_dict()))
    OutboxWatcher(workspace, exports_of(workspace, gateway)).scan()
    answer = (workspace / OUTBOX / answer_file(request.id)).read_text()
    assert "unknown token [token]" in answer and TOKEN not in answer

    other = tmp_path / "other"
    (other / "outbox").mkdir(parents=True)
    linked = tmp_path / "linked-home"
    linked.mkdir()
    (linked / ".sbx").symlink_to(other)
    (other / "outbox" / request_file(request.id)).write_text(json.dumps(request.to_dict()))
    assert OutboxWatcher(linked, exports_of(linked, gateway)).scan() == 0
    assert (other / "outbox" / request_file(request.id)).exists()


def test_the_helper_and_the_watcher_together(workspace: Path, gateway: FakeGateway) -> None:
    watcher = OutboxWatcher(workspace, exports_of(workspace, gateway), interval=0.05)
    watcher.start()
    try:
        result = request_export(["results/table.csv"], "counts", workspace=workspace, timeout=10)
    finally:
        watcher.stop()
    assert result.id == EXPORT_ID and result.status == "review"
    assert outbox_names(workspace) == []


def test_the_server_config_loads_the_extension_and_closes_files() -> None:
    config = server_config()
    assert config["ServerApp"]["jpserver_extensions"]["sandbox.kernel.exports"] is True
    assert config["ServerApp"]["reraise_server_extension_failures"] is True
    assert config["ContentsManager"]["files_handler_class"] == (
        "sandbox.kernel.exports.DownloadRefused"
    )
    assert config["ContentsManager"]["allow_hidden"] is False
