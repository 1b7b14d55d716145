"""The executed-code record end to end: a real sandbox (bubblewrap, both namespaces), the
sandbox's Python with jupyter_client driving the ``sbx`` kernel through the provisioner and
its auditing proxy, and a real recording endpoint on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.runtime.bwrap import Profile
from sandbox.runtime.spec import SandboxSpec
from tests.recording import Endpoint
from tests.sandboxes import SANDBOX_PYTHON, SandboxFactory, sandboxes  # noqa: F401

DRIVER = Path(__file__).with_name("code_record_driver.py")
TOKEN = "record-token-7c1e"  # noqa: S105 - a test token
DEADLINE = 90.0


class RecordingEndpoint(Endpoint):
    """The platform's recording endpoint as the provisioner sees it: stores each
    authenticated execution and answers ``201 {"seq", "sha256"}``, or ``403`` when told to
    refuse. Requests without the token are kept apart, as intrusions."""

    def __init__(self) -> None:
        self.store: list[dict[str, Any]] = []
        self.intrusions: list[str] = []
        self.refuse = False
        super().__init__(self.judge)

    def judge(self, headers: dict[str, str], data: dict[str, Any]) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            self.intrusions.append(json.dumps(data))
            return 401, {"detail": "not authenticated"}
        if self.refuse:
            return 403, {"detail": "the grant is suspended"}
        sha = hashlib.sha256(data["code"].encode()).hexdigest()
        self.store.append({**data, "sha256": sha})
        return 201, {"seq": len(self.store), "sha256": sha}


@pytest.fixture
def endpoint() -> Iterator[RecordingEndpoint]:
    endpoint = RecordingEndpoint()
    yield endpoint
    endpoint.close()


def drive(
    factory: SandboxFactory, spec: SandboxSpec, endpoint: RecordingEndpoint
) -> dict[str, dict[str, Any]]:
    """Run the driver in the sandbox's server namespace; its steps by name."""
    script = spec.workspace / DRIVER.name
    shutil.copy(DRIVER, script)
    os.chown(script, spec.uid, spec.gid)
    python = str(SANDBOX_PYTHON / "bin" / "python")
    env = {
        "SBX_RECORD_URL": endpoint.url,
        "SBX_RECORD_TOKEN": TOKEN,
        "SBX_SANDBOX_PYTHON": str(SANDBOX_PYTHON),
        "SBX_TMP_BYTES": str(64 << 20),
        "SBX_GRANT": "grant-17",
    }
    steps: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryFile() as errors:
        process = factory.runtime.launch(
            spec,
            [python, f"/home/jovyan/{DRIVER.name}"],
            profile=Profile.SERVER,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        watchdog = threading.Timer(DEADLINE, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None and process.stdin is not None
            for line in process.stdout:
                if not line.startswith(b"SBX "):
                    continue
                step = json.loads(line[4:])
                steps[step["step"]] = step
                if step["step"].startswith("pause-"):
                    endpoint.refuse = step["step"] == "pause-refuse"
                    process.stdin.write(b"go\n")
                    process.stdin.flush()
            process.stdin.close()
            process.wait(10)
        finally:
            watchdog.cancel()
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        errors.seek(0)
        log = errors.read().decode(errors="replace")
    assert process.returncode == 0, log[-4000:]
    return steps


def test_every_cell_is_recorded_before_it_runs_and_the_kernel_cannot_forge_it(
    sandboxes: SandboxFactory,  # noqa: F811
    endpoint: RecordingEndpoint,
) -> None:
    spec = sandboxes.make()
    steps = drive(sandboxes, spec, endpoint)
    kernel = steps["started"]["kernel"]

    # Every cell that ran is in the store, in order, with its SHA-256; the refused one is
    # not, and nothing else is.
    ran = ["first", "probe", "raw", "after-raw", "accepted", "restarted"]
    assert [record["message"] for record in endpoint.store] == [steps[s]["message"] for s in ran]
    for name, record in zip(ran, endpoint.store, strict=True):
        assert record["code"] == steps[name]["code"]
        assert record["sha256"] == hashlib.sha256(steps[name]["code"].encode()).hexdigest()
        assert (record["kernel"], record["kind"]) == (kernel, "execute")
        assert steps[name]["reply"]["status"] == "ok", steps[name]
    assert steps["first"]["stdout"] == "42\n"

    # The kernel runs in the kernel namespace: loopback only, the sandbox's uid, /data.
    facts = json.loads(steps["probe"]["stdout"])
    assert facts["interfaces"] == ["lo"]
    assert facts["uid"] == spec.uid
    assert facts["data"].startswith("district,age_band,count")
    assert facts["environ"]["SBX_GRANT"] == "grant-17"
    # It cannot see the server, its token or the proxy's sockets, nor reach the endpoint.
    assert not any(TOKEN in value for value in facts["environ"].values())
    assert not any(name.startswith("SBX_RECORD") for name in facts["environ"])
    assert facts["oom_score_adj"] == "1000"  # the kernel dies before the server
    for command in facts["processes"].values():  # the kernel's own, and bubblewrap's init
        assert "ipykernel_launcher" in command or command.startswith("bwrap"), command
    assert "reached" not in facts["ledger"]
    assert endpoint.intrusions == []
    assert facts["run"] == ["connection.json", *(f"kernel-{port}" for port in range(1, 6))]
    assert facts["server_folder"] is False
    assert facts["frontend"] == "FileNotFoundError"

    # A raw message sent from a cell runs (the kernel may run code) but is never recorded.
    raw = json.loads(steps["raw"]["stdout"])["raw"]
    assert steps["after-raw"]["stdout"] == "True\n"
    assert raw not in {record["message"] for record in endpoint.store}

    # When the endpoint refuses, the cell does not run and the client learns why.
    refused = steps["refused"]["reply"]
    assert (refused["status"], refused["ename"]) == ("error", "NotRecorded")
    assert refused["evalue"] == "the ledger refused (403): the grant is suspended"
    assert [o["type"] for o in steps["refused"]["outputs"]] == ["error"]
    assert not (spec.workspace / "refused.txt").exists()

    # The debugger could evaluate unrecorded code: refused.
    assert steps["debug"]["type"] == "debug_reply"
    assert steps["debug"]["content"]["success"] is False
    assert not (spec.workspace / "debug.txt").exists()

    # After a restart the new kernel is behind the proxy too; after shutdown nothing is left.
    assert steps["restarted"]["stdout"].strip().isdigit()
    assert steps["stopped"] == {"step": "stopped", "kernel_folder": False, "server_folder": False}
