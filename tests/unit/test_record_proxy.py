"""The executed-code record: the auditing proxy against a kernel made of real ZeroMQ
sockets, and the HTTP recorder against a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from zmq.utils.monitor import recv_monitor_message

from sandbox.kernel.kernelspec import server_config, write_kernel_spec
from sandbox.kernel.provisioner import KernelSettings, SandboxProvisioner
from sandbox.kernel.proxy import PORTS, AuditingProxy, endpoint
from sandbox.kernel.record import (
    MAX_CODE_BYTES,
    Execution,
    HttpRecorder,
    Kind,
    NotRecorded,
    Receipt,
)
from sandbox.runtime.spec import SandboxError
from tests.recording import Endpoint

KEY = b"a-key-shared-by-server-and-kernel"
KERNEL = "k-1"
TIMEOUT_MS = 5000


class LedgerTwin:
    """The in-memory recorder: keeps what it records, or refuses as told."""

    def __init__(self) -> None:
        self.executions: list[Execution] = []
        self.calls = 0
        self.failure: Exception | None = None
        self.refused_kinds: set[Kind] = set()

    def record(self, execution: Execution) -> Receipt:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        if execution.kind in self.refused_kinds:
            raise NotRecorded(f"{execution.kind} refused")
        self.executions.append(execution)
        return Receipt(seq=len(self.executions), sha256=execution.sha256)

    def messages(self) -> list[str]:
        return [execution.message for execution in self.executions]


class FakeKernel:
    """A kernel's five sockets, bound like ipykernel binds them, in a thread. It answers
    every request and notes, for each, whether the ledger already held it on arrival."""

    def __init__(self, folder: Path, ledger: LedgerTwin) -> None:
        self.session = Session(key=KEY)
        self.ledger = ledger
        self.info: dict[str, Any] = {
            "transport": "ipc",
            "ip": str(folder / "kernel"),
            **PORTS,
            "key": KEY,
            "signature_scheme": "hmac-sha256",
        }
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.recorded_on_arrival: list[bool] = []
        self.sent_ids: list[str] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._bound.wait(5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def types(self) -> list[str]:
        return [message["header"]["msg_type"] for _, message in self.received]

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        kinds = {
            "shell": zmq.ROUTER,
            "control": zmq.ROUTER,
            "stdin": zmq.ROUTER,
            "iopub": zmq.XPUB,
            "hb": zmq.ROUTER,
        }
        sockets = {}
        for channel, kind in kinds.items():
            sockets[channel] = context.socket(kind)
            sockets[channel].linger = 0
            sockets[channel].bind(endpoint(self.info, channel))
        # the proxy's stdin may connect a moment after its shell: wait for it, don't drop
        sockets["stdin"].setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._bound.set()
        poller = zmq.Poller()
        for socket in sockets.values():
            poller.register(socket, zmq.POLLIN)
        by_socket = {socket: channel for channel, socket in sockets.items()}
        try:
            while not self._stop.is_set():
                for socket, _ in poller.poll(50):
                    self._handle(by_socket[socket], sockets)
        finally:
            context.destroy(linger=0)

    def _handle(self, channel: str, sockets: dict[str, zmq.Socket[bytes]]) -> None:
        socket = sockets[channel]
        if channel == "hb":
            socket.send_multipart(socket.recv_multipart())
            return
        if channel == "iopub":
            if socket.recv().startswith(b"\x01"):
                self.subscribed.set()
            return
        idents, message = self.session.recv(socket)
        assert message is not None
        self.received.append((channel, message))
        self.recorded_on_arrival.append(message["header"]["msg_id"] in self.ledger.messages())
        msg_type = message["header"]["msg_type"]
        if msg_type == "execute_request":
            self._execute(idents, message, sockets)
        elif msg_type.endswith("_request"):
            self._send(
                socket, msg_type.replace("_request", "_reply"), {"status": "ok"}, message, idents
            )

    def _execute(
        self, idents: list[bytes], request: dict[str, Any], sockets: dict[str, zmq.Socket[bytes]]
    ) -> None:
        code = request["content"]["code"]
        if code.startswith("input("):
            self._send(sockets["stdin"], "input_request", {"prompt": "? "}, request, idents)
            stdin = sockets["stdin"]
            assert stdin.poll(TIMEOUT_MS)
            _, reply = self.session.recv(stdin)
            assert reply is not None
            self.received.append(("stdin", reply))
            self.recorded_on_arrival.append(reply["header"]["msg_id"] in self.ledger.messages())
        self._send(sockets["iopub"], "stream", {"name": "stdout", "text": "ran\n"}, request, [])
        reply = {"status": "ok", "execution_count": len(self.received)}
        self._send(sockets["shell"], "execute_reply", reply, request, idents)

    def _send(
        self,
        socket: zmq.Socket[bytes],
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any],
        idents: list[bytes],
    ) -> None:
        message = self.session.msg(msg_type, content, parent=parent)
        self.sent_ids.append(message["header"]["msg_id"])
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while True:
            try:
                self.session.send(socket, message, ident=idents)
                return
            except zmq.ZMQError:  # EHOSTUNREACH: the peer is not connected yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


class Client:
    """What the server's kernel manager connects: one socket per channel."""

    def __init__(self, info: dict[str, Any], key: bytes = KEY) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.session = Session(key=key)
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        self.monitors: list[zmq.Socket[bytes]] = []
        kinds = {
            "shell": zmq.DEALER,
            "control": zmq.DEALER,
            "stdin": zmq.DEALER,
            "iopub": zmq.SUB,
            "hb": zmq.REQ,
        }
        for channel, kind in kinds.items():
            socket = self.context.socket(kind)
            socket.linger = 0
            if channel in ("shell", "stdin"):
                socket.setsockopt(zmq.ROUTING_ID, self.session.bsession)
            if channel == "iopub":
                socket.setsockopt(zmq.SUBSCRIBE, b"")
            self.monitors.append(socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))
            socket.connect(endpoint(info, channel))
            self.sockets[channel] = socket

    def wait_connected(self) -> None:
        """Until every socket has shaken hands with the proxy (a ROUTER drops what is
        addressed to a peer it does not know yet)."""
        for monitor in self.monitors:
            assert monitor.poll(TIMEOUT_MS), "a client socket never connected"
            recv_monitor_message(monitor)
        for socket in self.sockets.values():
            socket.disable_monitor()
        for monitor in self.monitors:
            monitor.close()
        self.monitors = []

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        sent = self.session.send(self.sockets[channel], msg_type, content)
        assert sent is not None
        return sent

    def receive(self, channel: str) -> dict[str, Any]:
        socket = self.sockets[channel]
        assert socket.poll(TIMEOUT_MS), f"nothing arrived on {channel}"
        _, message = self.session.recv(socket)
        assert message is not None
        return message

    def iopub_of(self, parent: dict[str, Any], last: str = "idle") -> list[dict[str, Any]]:
        """The iopub messages of ``parent``, up to the one of type or state ``last``."""
        found: list[dict[str, Any]] = []
        while True:
            message = self.receive("iopub")
            if message["parent_header"].get("msg_id") != parent["header"]["msg_id"]:
                continue
            found.append(message)
            if last in (message["msg_type"], message["content"].get("execution_state")):
                return found

    def close(self) -> None:
        self.context.destroy(linger=0)


class Rig:
    def __init__(self, folder: Path) -> None:
        self.ledger = LedgerTwin()
        self.kernel = FakeKernel(folder / "kernel", self.ledger)
        (folder / "kernel").mkdir()
        self.proxy = AuditingProxy(KERNEL, self.kernel.info, self.ledger, folder / "front")
        self.client = Client(self.proxy.connection_info)

    def execute(self, code: str, **content: Any) -> dict[str, Any]:
        return self.client.send("shell", "execute_request", {"code": code, **content})


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short folder for ipc sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sbxp-", dir="/tmp"))  # noqa: S108
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rig(folder: Path) -> Iterator[Rig]:
    rig = Rig(folder)
    rig.kernel.start()
    rig.proxy.start()
    try:
        rig.client.wait_connected()
        assert rig.kernel.subscribed.wait(5), "the client's subscription never reached the kernel"
        yield rig
    finally:
        rig.client.close()
        rig.proxy.stop()
        rig.kernel.stop()


def settle(rig: Rig) -> None:
    """Wait until everything sent before has passed the proxy: a kernel_info round trip."""
    sent = rig.client.send("shell", "kernel_info_request", {})
    assert rig.client.receive("shell")["parent_header"]["msg_id"] == sent["header"]["msg_id"]


def test_an_execute_request_is_recorded_before_the_kernel_gets_it(rig: Rig) -> None:
    request = rig.execute("x = 1\nprint(x)")
    reply = rig.client.receive("shell")
    assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert reply["content"]["status"] == "ok"
    assert reply["header"]["msg_id"] in rig.kernel.sent_ids  # the kernel's own reply
    assert rig.kernel.types() == ["execute_request"]
    assert rig.kernel.recorded_on_arrival == [True]
    assert rig.ledger.executions == [
        Execution(
            kernel=KERNEL,
            message=request["header"]["msg_id"],
            kind=Kind.EXECUTE,
            code="x = 1\nprint(x)",
            session=rig.client.session.session,
        )
    ]
    stream = rig.client.iopub_of(request, last="stream")[-1]
    assert stream["content"]["text"] == "ran\n"
    assert stream["header"]["msg_id"] in rig.kernel.sent_ids


def test_cells_are_recorded_in_the_order_they_are_sent(rig: Rig) -> None:
    requests = [rig.execute(f"cell_{number} = {number}") for number in range(5)]
    for _ in requests:
        rig.client.receive("shell")
    assert rig.ledger.messages() == [request["header"]["msg_id"] for request in requests]
    assert rig.kernel.recorded_on_arrival == [True] * 5


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (NotRecorded("the ledger is down"), "the ledger is down"),
        (RuntimeError("token=s3cret"), "the code could not be recorded (RuntimeError)"),
    ],
)
def test_a_cell_that_cannot_be_recorded_never_reaches_the_kernel(
    rig: Rig, failure: Exception, reason: str
) -> None:
    rig.ledger.failure = failure
    request = rig.execute("open('/home/jovyan/side-effect', 'w')")
    reply = rig.client.receive("shell")  # the client's session checked its signature
    assert reply["msg_type"] == "execute_reply"
    assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "NotRecorded"
    assert reply["content"]["evalue"] == reason
    published = rig.client.iopub_of(request)
    assert [m["msg_type"] for m in published] == ["status", "error", "status"]
    assert published[1]["content"]["evalue"] == reason
    rig.ledger.failure = None
    settle(rig)
    assert rig.kernel.types() == ["kernel_info_request"]
    assert "s3cret" not in json.dumps(reply["content"])


def test_oversize_cells_are_refused_without_asking_the_ledger(rig: Rig) -> None:
    code = "é" * (MAX_CODE_BYTES // 2 + 1)  # few characters, too many bytes
    rig.execute(code)
    reply = rig.client.receive("shell")
    size = MAX_CODE_BYTES + 2
    assert reply["content"]["evalue"] == (
        f"cell too large to record ({size} bytes > {MAX_CODE_BYTES}); split it"
    )
    assert rig.ledger.calls == 0
    rig.execute("x" * MAX_CODE_BYTES)
    assert rig.client.receive("shell")["content"]["status"] == "ok"
    assert rig.kernel.types() == ["execute_request"]


def test_user_expressions_are_refused_since_they_would_run_unrecorded(rig: Rig) -> None:
    rig.execute("x = 1", user_expressions={"y": "__import__('os').system('id')"})
    reply = rig.client.receive("shell")
    assert reply["content"]["ename"] == "NotRecorded"
    assert "user_expressions" in reply["content"]["evalue"]
    settle(rig)
    assert rig.kernel.types() == ["kernel_info_request"]
    assert rig.ledger.executions == []


def test_messages_with_a_bad_signature_are_dropped_unrecorded(rig: Rig, folder: Path) -> None:
    forger = Client(rig.proxy.connection_info, key=b"not-the-key")
    try:
        forger.send("shell", "execute_request", {"code": "forged = 1"})
        forger.send("control", "shutdown_request", {"restart": False})
        forger.sockets["shell"].send_multipart([b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"])
        forger.sockets["shell"].send_multipart([b"garbage"])
    finally:
        forger.close()
    settle(rig)
    assert rig.kernel.types() == ["kernel_info_request"]
    assert rig.ledger.calls == 0


def test_a_replayed_message_is_dropped(rig: Rig) -> None:
    message = rig.client.session.msg("execute_request", {"code": "counter += 1"})
    frames = rig.client.session.serialize(message)
    rig.client.sockets["shell"].send_multipart(frames)
    rig.client.receive("shell")
    rig.client.sockets["shell"].send_multipart(frames)
    settle(rig)
    assert rig.kernel.types() == ["execute_request", "kernel_info_request"]
    assert len(rig.ledger.executions) == 1


def test_the_debugger_and_code_on_control_are_refused(rig: Rig) -> None:
    debug = rig.client.send("control", "debug_request", {"seq": 7, "command": "evaluate"})
    reply = rig.client.receive("control")
    assert reply["msg_type"] == "debug_reply"
    assert reply["parent_header"]["msg_id"] == debug["header"]["msg_id"]
    assert reply["content"]["success"] is False
    assert reply["content"]["request_seq"] == 7
    rig.client.send("control", "execute_request", {"code": "on_control = 1"})
    assert rig.client.receive("control")["content"]["status"] == "error"
    rig.client.send("shell", "connect_request", {})
    assert rig.client.receive("shell")["msg_type"] == "connect_reply"
    rig.client.send("shell", "comm_msg", {"comm_id": "c", "data": {}})
    interrupt = rig.client.send("control", "interrupt_request", {})
    assert rig.client.receive("control")["parent_header"]["msg_id"] == interrupt["header"]["msg_id"]
    settle(rig)
    assert rig.kernel.types() == ["comm_msg", "interrupt_request", "kernel_info_request"]
    assert rig.ledger.calls == 0


def test_an_input_reply_is_recorded_before_the_kernel_gets_it(rig: Rig) -> None:
    request = rig.execute("input('name? ')")
    prompt = rig.client.receive("stdin")
    assert prompt["msg_type"] == "input_request"
    answer = rig.client.session.send(
        rig.client.sockets["stdin"], "input_reply", {"value": "Ada"}, parent=prompt
    )
    assert answer is not None
    assert rig.client.receive("shell")["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert [(e.kind, e.code) for e in rig.ledger.executions] == [
        (Kind.EXECUTE, "input('name? ')"),
        (Kind.INPUT, "Ada"),
    ]
    assert rig.kernel.recorded_on_arrival == [True, True]
    assert rig.kernel.received[1][1]["content"]["value"] == "Ada"


def test_an_input_that_cannot_be_recorded_reaches_the_kernel_as_end_of_file(rig: Rig) -> None:
    rig.ledger.refused_kinds = {Kind.INPUT}
    rig.execute("input('secret? ')")
    prompt = rig.client.receive("stdin")
    rig.client.session.send(rig.client.sockets["stdin"], "input_reply", {"value": "x"}, prompt)
    rig.client.receive("shell")
    channel, reply = rig.kernel.received[1]
    assert (channel, reply["msg_type"]) == ("stdin", "input_reply")
    assert reply["content"]["value"] == "\x04"  # signed by the proxy, accepted by the kernel
    assert [e.kind for e in rig.ledger.executions] == [Kind.EXECUTE]


def test_heartbeats_pass(rig: Rig) -> None:
    rig.client.sockets["hb"].send(b"ping")
    assert rig.client.sockets["hb"].poll(TIMEOUT_MS)
    assert rig.client.sockets["hb"].recv() == b"ping"


def test_start_and_stop_are_idempotent(folder: Path) -> None:
    rig = Rig(folder)
    rig.kernel.start()
    try:
        rig.proxy.start()
        rig.proxy.start()
        assert rig.proxy.running
        rig.proxy.stop()
        rig.proxy.stop()
        assert not rig.proxy.running
        assert not list((folder / "front").iterdir())
        rig.proxy.start()  # as after a kernel restart: the client reconnects by itself
        settle(rig)
    finally:
        rig.client.close()
        rig.proxy.stop()
        rig.kernel.stop()
    assert not any(thread.name.startswith("sbx-audit") for thread in threading.enumerate())


def test_the_proxy_needs_ipc_and_a_key(folder: Path) -> None:
    info = {"transport": "ipc", "ip": str(folder / "k"), **PORTS, "key": b""}
    with pytest.raises(ValueError, match="key"):
        AuditingProxy(KERNEL, info, LedgerTwin(), folder)
    with pytest.raises(ValueError, match="ipc"):
        AuditingProxy(KERNEL, {**info, "transport": "tcp", "key": KEY}, LedgerTwin(), folder)


# -- the execution and the HTTP recorder -------------------------------------------------


def test_an_execution_round_trips_and_hashes_its_code() -> None:
    execution = Execution(kernel="k", message="m", kind="input", code="名前", session="s")  # type: ignore[arg-type]
    assert execution.kind is Kind.INPUT
    assert Execution.from_dict(json.loads(json.dumps(execution.to_dict()))) == execution
    assert execution.sha256 == hashlib.sha256("名前".encode()).hexdigest()


@pytest.fixture
def endpoint_of() -> Iterator[Callable[..., Endpoint]]:
    made: list[Endpoint] = []

    def make(answer: Callable[[dict[str, Any]], tuple[int, Any]]) -> Endpoint:
        made.append(Endpoint(lambda _headers, body: answer(body)))
        return made[-1]

    yield make
    for endpoint_ in made:
        endpoint_.close()


TOKEN = "tok-3f9a-secret"  # noqa: S105 - a test token
CELL = Execution(kernel="k", message="m-1", kind=Kind.EXECUTE, code="print('hi')", session="s")


def sha_of(body: dict[str, Any]) -> str:
    return hashlib.sha256(body["code"].encode()).hexdigest()


def test_http_recorder_posts_the_cell_with_its_token(endpoint_of: Callable[..., Endpoint]) -> None:
    ledger = endpoint_of(lambda body: (201, {"seq": 41, "sha256": sha_of(body)}))
    receipt = HttpRecorder(ledger.url, TOKEN).record(CELL)
    assert receipt == Receipt(seq=41, sha256=CELL.sha256)
    headers, body = ledger.received[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {"kernel": "k", "message": "m-1", "kind": "execute", "code": "print('hi')"}


@pytest.mark.parametrize(
    ("status", "payload", "reason"),
    [
        (403, {"detail": "the grant has ended"}, "the ledger refused (403): the grant has ended"),
        (403, {"detail": f"bad token {TOKEN}"}, "the ledger refused (403): bad token [token]"),
        (500, "not json", "the ledger refused (500)"),
        (200, {"seq": 1, "sha256": "x"}, "the ledger answered 200 instead of 201"),
        (201, {"seq": 1, "sha256": "0" * 64}, "the ledger recorded something else than the cell"),
        (201, {"sequence": 1}, "the ledger's answer was not understood"),
    ],
)
def test_http_recorder_refusals(
    endpoint_of: Callable[..., Endpoint], status: int, payload: Any, reason: str
) -> None:
    ledger = endpoint_of(lambda body: (status, payload))
    with pytest.raises(NotRecorded) as raised:
        HttpRecorder(ledger.url, TOKEN).record(CELL)
    assert raised.value.reason.startswith(reason)
    assert TOKEN not in str(raised.value)


def test_http_recorder_refuses_oversize_cells_without_a_request(
    endpoint_of: Callable[..., Endpoint],
) -> None:
    ledger = endpoint_of(lambda body: (201, {"seq": 1, "sha256": sha_of(body)}))
    big = Execution(kernel="k", message="m", kind=Kind.EXECUTE, code="x" * 49153, session="s")
    with pytest.raises(NotRecorded, match=r"^cell too large to record \(49153 bytes > 49152\)"):
        HttpRecorder(ledger.url, TOKEN).record(big)
    assert ledger.received == []


def test_http_recorder_when_the_ledger_is_unreachable(endpoint_of: Callable[..., Endpoint]) -> None:
    ledger = endpoint_of(lambda body: (201, {}))
    url = ledger.url
    ledger.close()
    started = time.monotonic()
    with pytest.raises(NotRecorded, match="unreachable"):
        HttpRecorder(url, TOKEN, timeout=2).record(CELL)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="http"):
        HttpRecorder("file:///etc/passwd", TOKEN)


# -- the provisioner's settings and the kernel spec -------------------------------------


def test_without_a_recording_endpoint_no_kernel_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kernel_spec(tmp_path, Path(sys.prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.delenv("SBX_RECORD_URL", raising=False)
    manager = KernelManager(kernel_name="sbx")
    with pytest.raises(SandboxError, match="SBX_RECORD_URL is not set"):
        manager.start_kernel()
    assert isinstance(manager.provisioner, SandboxProvisioner)
    assert not manager.has_kernel


def test_the_kernel_environment_is_clean() -> None:
    environ = {
        "SBX_RECORD_URL": "http://127.0.0.1:9/api/executions",
        "SBX_RECORD_TOKEN": TOKEN,
        "SBX_SANDBOX_PYTHON": "/opt/sbx-python",
        "SBX_GRANT": "grant-3",
        "SBX_TMP_BYTES": "1048576",
    }
    settings = KernelSettings.from_environ(environ)
    env = settings.kernel_env("notebook.ipynb")
    assert TOKEN not in json.dumps(env)
    assert env["SBX_GRANT"] == "grant-3"
    assert env["PATH"].startswith("/opt/sbx-python/bin:")
    assert (settings.tmp_bytes, settings.bwrap) == (1 << 20, "bwrap")
    with pytest.raises(SandboxError, match="SBX_RECORD_TOKEN"):
        KernelSettings.from_environ({**environ, "SBX_RECORD_TOKEN": ""})


def test_the_kernel_spec_names_the_provisioner(tmp_path: Path) -> None:
    path = write_kernel_spec(tmp_path, Path("/opt/sbx-python"))
    assert path == tmp_path / "kernels" / "sbx" / "kernel.json"
    spec = json.loads(path.read_text())
    assert spec["argv"] == [
        "/opt/sbx-python/bin/python",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert spec["language"] == "python"
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "sbx-sandbox"
    config = server_config()
    assert config["MappingKernelManager"]["default_kernel_name"] == "sbx"
    assert config["KernelSpecManager"] == {
        "allowed_kernelspecs": ["sbx"],
        "ensure_native_kernel": False,
    }
    assert config["ServerApp"]["terminals_enabled"] is False
    assert config["ContentsManager"]["allow_hidden"] is False
    assert config["KernelManager"]["transport"] == "ipc"
