"""A real Jupyter server with the sandbox's server config (the exports extension loaded):
no route hands a workspace file's bytes to the browser, notebooks and text still open and
uploads still arrive, and export requests from the browser's session and from a notebook's
outbox reach the gateway (the unit tests' fake of it, over real HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.kernel.kernelspec import write_server_config
from sandbox.notebook import request_export
from tests.integration.test_serve import free_port
from tests.unit.test_sandbox_exports import EXPORT_ID, TOKEN, FakeGateway

SERVER_TOKEN = "browser-session-token"  # noqa: S105 - a test value
TABLE = "district,count\nnorth,120\n"
NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@dataclass
class Served:
    url: str
    root: Path
    gateway: FakeGateway

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 - the test's own server
            f"{self.url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"token {SERVER_TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("exports-server")
    root = base / "home"
    root.mkdir()
    (root / "x.csv").write_text(TABLE)
    (root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    write_server_config(base / "jupyter", Path(sys.prefix))
    gateway = FakeGateway()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "JUPYTER_CONFIG_DIR": str(base / "jupyter"),
        "JUPYTER_PATH": str(base / "jupyter"),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "SBX_RECORD_URL": gateway.record_url,
        "SBX_RECORD_TOKEN": TOKEN,
    }
    command = [
        str(Path(sys.executable).with_name("jupyter-server")),
        f"--port={port}",
        "--ip=127.0.0.1",
        "--no-browser",
        "--allow-root",
        f"--IdentityProvider.token={SERVER_TOKEN}",
        f"--ServerApp.root_dir={root}",
    ]
    log = (base / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", root, gateway)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (base / "server.log").read_text()
            try:
                if served.call("GET", "/api/status")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (base / "server.log").read_text()
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        gateway.close()
    server_log = (base / "server.log").read_text()
    assert "sandbox.kernel.exports | extension was successfully loaded" in server_log
    assert TOKEN not in server_log


def test_no_route_downloads_a_file_but_notebooks_open_and_uploads_arrive(served: Served) -> None:
    for path in [
        "/files/x.csv",
        "/files/x.csv?download=1",
        "/files/missing.csv",
        "/api/contents/x.csv?format=base64&content=1",
        "/api/contents/img.png?type=file&content=1",
        "/view/x.csv",
    ]:
        status, body = served.call("GET", path)
        assert status == 403, path
        assert b"export request" in body, path
    status, _ = served.call("GET", "/nbconvert/html/nb.ipynb?download=true")
    assert status in (403, 404)
    assert served.call("POST", "/nbconvert/html", {"notebook_contents": NOTEBOOK})[0] == 403
    assert served.call("GET", "/api/nbconvert") == (200, b"{}")

    status, body = served.call("GET", "/api/contents/nb.ipynb?type=notebook&content=1")
    assert status == 200 and json.loads(body)["content"]["cells"] == []
    status, body = served.call("GET", "/api/contents/x.csv?type=file&format=text&content=1")
    assert status == 200 and json.loads(body)["content"] == TABLE
    upload = {"type": "file", "format": "base64", "content": "AAECAw==", "name": "up.bin"}
    assert served.call("PUT", "/api/contents/up.bin", upload)[0] == 201
    assert (served.root / "up.bin").read_bytes() == b"\x00\x01\x02\x03"
    assert served.call("POST", "/api/contents", {"copy_from": "img.png"})[0] == 201


def test_export_requests_reach_the_gateway_from_the_browser_and_from_a_notebook(
    served: Served,
) -> None:
    (served.root / ".hidden.csv").write_text(TABLE)
    (served.root / "linked.csv").symlink_to("/etc/hostname")
    status, page = served.call("GET", "/sbx/exports")
    assert status == 200 and "申请导出".encode() in page
    assert b'value="x.csv"' in page and b'value="nb.ipynb"' in page
    assert b".hidden.csv" not in page and b"linked.csv" not in page
    asked = {"files": ["x.csv"], "description": "counts by district"}
    status, body = served.call("POST", "/sbx/exports", asked)
    assert status == 201
    assert json.loads(body) == {
        "id": EXPORT_ID,
        "status": "review",
        "findings": 2,
        "blocking": 0,
        "url": f"/exports/{EXPORT_ID}",
    }
    assert [path for _, path, _, data in served.gateway.received if data == TABLE.encode()] == [
        f"/api/v1/sandbox/exports/{EXPORT_ID}/files/0"
    ]
    status, body = served.call("POST", "/sbx/exports", {**asked, "files": ["../etc/passwd"]})
    assert status == 400 and b".. part" in body

    served.gateway.received.clear()
    result = request_export(["x.csv"], "counts", workspace=served.root, timeout=20)
    assert result.id == EXPORT_ID and result.url == f"/exports/{EXPORT_ID}"
    assert len(served.gateway.received) == 3  # announced, sent, submitted: once
    assert not list((served.root / ".sbx" / "outbox").iterdir())
