"""The auditing proxy: the only way from the trusted Jupyter server to a sandboxed kernel.

The server's kernel manager connects to the proxy's *frontend* sockets, bound in a folder of
the server namespace that the kernel namespace does not contain; the proxy connects its
*backend* sockets to the kernel's. One thread moves messages between them::

    client (server) --shell/control/stdin--> [verify, allow, record] --> kernel
    client (server) <--replies, iopub, hb-------------------------------- kernel

Every message from a client is checked against the session's HMAC first (a bad or replayed
signature is dropped unrecorded), then against the channel's allowlist. An
``execute_request`` is recorded before it is forwarded and not forwarded at all when it
cannot be recorded: the proxy answers it itself with a signed ``execute_reply`` (``ename``
``NotRecorded``) and the iopub ``error`` and ``status`` a kernel would send, so the notebook
shows why. An ``input_reply`` is recorded as an input; one that cannot be recorded reaches
the kernel as end of file. On control only shutdown, interrupt and kernel info pass (the
debugger could evaluate code that was never recorded). What the kernel sends passes
unchanged: it can only reach its own clients, never the record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.session import Session

from sandbox.kernel.record import Execution, Kind, NotRecorded, Recorder, ensure_recordable

PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
SHELL_ALLOWED = frozenset(
    {
        "execute_request",
        "kernel_info_request",
        "complete_request",
        "inspect_request",
        "history_request",
        "is_complete_request",
        "comm_info_request",
        "comm_open",
        "comm_msg",
        "comm_close",
    }
)
CONTROL_ALLOWED = frozenset({"shutdown_request", "interrupt_request", "kernel_info_request"})
STDIN_ALLOWED = frozenset({"input_reply"})
ALLOWED = {"shell": SHELL_ALLOWED, "control": CONTROL_ALLOWED, "stdin": STDIN_ALLOWED}
ROUTING_ID = b"sbx-audit"  # shell and stdin share it, so input requests find their way back
POLL_MS = 100
LINGER_MS = 100
START_TIMEOUT = 10.0
log = logging.getLogger(__name__)


def endpoint(info: Mapping[str, Any], channel: str) -> str:
    """The ZeroMQ address of ``channel`` in an ipc connection info."""
    return f"ipc://{info['ip']}-{info[f'{channel}_port']}"


class AuditingProxy:
    """Forwards between the frontend sockets in ``folder`` and the kernel described by
    ``backend`` (an ipc connection info, paths as seen from here), recording through
    ``recorder``. :meth:`start` and :meth:`stop` may be called any number of times;
    :attr:`connection_info` is what the kernel manager should connect to."""

    def __init__(
        self,
        kernel: str,
        backend: Mapping[str, Any],
        recorder: Recorder,
        folder: Path,
        *,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        if backend.get("transport") != "ipc":
            raise ValueError("the auditing proxy speaks to kernels over ipc only")
        key = backend.get("key") or b""
        key = key.encode() if isinstance(key, str) else bytes(key)
        if not key:
            raise ValueError("the auditing proxy needs the session key to verify messages")
        scheme = str(backend.get("signature_scheme", "hmac-sha256"))
        self.kernel = kernel
        self.backend = dict(backend)
        self.recorder = recorder
        self.folder = Path(folder)
        self.log = logger or log
        self.session = Session(key=key, signature_scheme=scheme, check_pid=False)
        self.connection_info: dict[str, Any] = {
            "transport": "ipc",
            "ip": str(self.folder / "kernel"),
            **PORTS,
            "key": key,
            "signature_scheme": scheme,
            "kernel_name": str(backend.get("kernel_name", "")),
        }
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._sockets: dict[str, zmq.Socket[bytes]] = {}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the frontend, connect the backend and start forwarding (idempotent)."""
        with self._lock:
            if self.running:
                return
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)
            self._remove_sockets()
            self._stopping.clear()
            self._ready.clear()
            self._failure = None
            thread = threading.Thread(
                target=self._run, name=f"sbx-audit-{self.kernel}", daemon=True
            )
            thread.start()
            if not self._ready.wait(START_TIMEOUT):
                self._stopping.set()
                raise RuntimeError("the auditing proxy did not start")
            if self._failure is not None:
                thread.join()
                raise RuntimeError(f"the auditing proxy could not start: {self._failure}")
            self._thread = thread

    def stop(self, timeout: float = 15.0) -> None:
        """Stop forwarding and close every socket (idempotent); returns once the thread
        has ended."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            thread.join(timeout)
            if thread.is_alive():
                self.log.error("the auditing proxy of kernel %s did not stop", self.kernel)
            self._remove_sockets()

    # -- the forwarding thread ------------------------------------------------------------

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self._sockets = self._open(context)
        except Exception as error:  # reported by start(), which raises it
            self._failure = error
            self._ready.set()
            context.destroy(linger=0)
            return
        self._ready.set()
        poller = zmq.Poller()
        for socket in self._sockets.values():
            poller.register(socket, zmq.POLLIN)
        routes = self._routes()
        try:
            while not self._stopping.is_set():
                for socket, _ in poller.poll(POLL_MS):
                    frames = socket.recv_multipart()
                    try:
                        routes[socket](frames)
                    except zmq.Again:
                        self.log.warning("the auditing proxy dropped a message: queue full")
                    except zmq.ZMQError:
                        raise
                    except Exception:
                        self.log.exception("the auditing proxy dropped a message")
        except zmq.ZMQError as error:
            self.log.error("the auditing proxy of kernel %s failed: %s", self.kernel, error)
        finally:
            self._sockets = {}
            context.destroy(linger=LINGER_MS)

    def _open(self, context: zmq.Context[zmq.Socket[bytes]]) -> dict[str, zmq.Socket[bytes]]:
        kinds = {
            "shell": (zmq.ROUTER, zmq.DEALER),
            "control": (zmq.ROUTER, zmq.DEALER),
            "stdin": (zmq.ROUTER, zmq.DEALER),
            "iopub": (zmq.XPUB, zmq.XSUB),
            "hb": (zmq.ROUTER, zmq.DEALER),
        }
        sockets: dict[str, zmq.Socket[bytes]] = {}
        for channel, (front_kind, back_kind) in kinds.items():
            front = context.socket(front_kind)
            front.linger = LINGER_MS
            if front_kind == zmq.XPUB:
                front.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber reaches the kernel
            sockets[f"front_{channel}"] = front
            front.bind(endpoint(self.connection_info, channel))
            back = context.socket(back_kind)
            back.linger = LINGER_MS
            if channel in ("shell", "stdin"):
                back.setsockopt(zmq.ROUTING_ID, ROUTING_ID)
            sockets[f"back_{channel}"] = back
            back.connect(endpoint(self.backend, channel))
        return sockets

    def _routes(self) -> dict[zmq.Socket[bytes], Any]:
        sockets = self._sockets

        def to(name: str) -> Any:
            return lambda frames: sockets[name].send_multipart(frames, zmq.NOBLOCK)

        return {
            sockets["front_shell"]: lambda frames: self._from_client("shell", frames),
            sockets["front_control"]: lambda frames: self._from_client("control", frames),
            sockets["front_stdin"]: lambda frames: self._from_client("stdin", frames),
            sockets["front_iopub"]: to("back_iopub"),  # subscriptions
            sockets["front_hb"]: to("back_hb"),
            sockets["back_shell"]: to("front_shell"),
            sockets["back_control"]: to("front_control"),
            sockets["back_stdin"]: to("front_stdin"),
            sockets["back_iopub"]: to("front_iopub"),
            sockets["back_hb"]: to("front_hb"),
        }

    def _from_client(self, channel: str, frames: list[bytes]) -> None:
        try:
            idents, rest = self.session.feed_identities(frames, copy=True)
            message = self.session.deserialize(rest, content=True, copy=True)
        except Exception as error:
            self.log.warning(
                "dropped a message on %s of kernel %s: %s", channel, self.kernel, error
            )
            return
        msg_type = message["header"].get("msg_type", "")
        if msg_type not in ALLOWED[channel]:
            self._refuse(channel, idents, message)
            return
        if msg_type == "execute_request":
            reason = self._record(message, Kind.EXECUTE)
            if reason is not None:
                self._answer_not_recorded(idents, message, reason)
                return
        elif msg_type == "input_reply":
            reason = self._record(message, Kind.INPUT)
            if reason is not None:
                self._end_input(idents, message, reason)
                return
        self._sockets[f"back_{channel}"].send_multipart(frames, zmq.NOBLOCK)

    def _record(self, message: dict[str, Any], kind: Kind) -> str | None:
        """Record ``message``; ``None`` once recorded, otherwise why it was not."""
        try:
            execution = self._execution(message, kind)
            ensure_recordable(execution)
            self.recorder.record(execution)
        except NotRecorded as error:
            reason = error.reason
        except Exception as error:
            reason = f"the code could not be recorded ({type(error).__name__})"
        else:
            return None
        self.log.warning("not recorded, not run (kernel %s): %s", self.kernel, reason)
        return reason

    def _execution(self, message: dict[str, Any], kind: Kind) -> Execution:
        content = message["content"]
        if not isinstance(content, dict):
            raise NotRecorded("the request has no content")
        if kind is Kind.EXECUTE and content.get("user_expressions"):
            raise NotRecorded("user_expressions are not recorded; put them in the cell")
        code = content.get("code" if kind is Kind.EXECUTE else "value", "")
        if not isinstance(code, str):
            raise NotRecorded("the request's code is not text")
        header = message["header"]
        return Execution(
            kernel=self.kernel,
            message=str(header.get("msg_id", "")),
            kind=kind,
            code=code,
            session=str(header.get("session", "")),
        )

    # -- answers of the proxy's own, signed with the session's key -------------------------

    def _answer_not_recorded(
        self, idents: list[bytes], request: dict[str, Any], reason: str
    ) -> None:
        error = {"ename": "NotRecorded", "evalue": reason, "traceback": [f"NotRecorded: {reason}"]}
        self._publish("status", {"execution_state": "busy"}, request)
        self._publish("error", error, request)
        self.session.send(
            self._sockets["front_shell"],
            "execute_reply",
            {"status": "error", "execution_count": None, **error},
            parent=request,
            ident=idents,
            metadata={"status": "error"},
        )
        self._publish("status", {"execution_state": "idle"}, request)

    def _publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        topic = f"kernel.{self.kernel}.{msg_type}".encode()
        self.session.send(self._sockets["front_iopub"], msg_type, content, parent, ident=topic)

    def _end_input(self, idents: list[bytes], reply: dict[str, Any], reason: str) -> None:
        """The kernel waits for this input: it gets end of file (``EOFError`` in the cell)."""
        self.session.send(
            self._sockets["back_stdin"],
            "input_reply",
            {"status": "error", "value": "\x04", "evalue": reason},
            parent={"header": reply["parent_header"]},
            ident=idents,
        )

    def _refuse(self, channel: str, idents: list[bytes], request: dict[str, Any]) -> None:
        msg_type = str(request["header"].get("msg_type", ""))
        reason = f"{msg_type or 'this message'} is not allowed in the sandbox"
        self.log.warning("refused %s on %s of kernel %s", msg_type, channel, self.kernel)
        if not msg_type.endswith("_request"):
            return
        content: dict[str, Any] = {
            "status": "error",
            "ename": "Refused",
            "evalue": reason,
            "traceback": [],
        }
        if msg_type == "debug_request":  # a Debug Adapter Protocol response
            body = request["content"] if isinstance(request["content"], dict) else {}
            content |= {
                "type": "response",
                "request_seq": body.get("seq", 0),
                "success": False,
                "command": body.get("command", ""),
                "message": reason,
            }
        reply_type = msg_type.removesuffix("_request") + "_reply"
        self.session.send(
            self._sockets[f"front_{channel}"], reply_type, content, parent=request, ident=idents
        )

    def _remove_sockets(self) -> None:
        for port in PORTS.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.connection_info['ip']}-{port}")
