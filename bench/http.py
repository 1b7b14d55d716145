"""HTTP requests: the gateway's authenticated reads and writes against a bare FastAPI app.

Each server runs in its own process on 127.0.0.1 at a free port, one server at a time,
served by uvicorn as ``sbx serve`` serves the gateway (its ``run_gateway``: one worker,
JSON log lines on stderr, uvicorn's access log off):

- ``canned``: a raw asyncio server that answers every request with fixed bytes. Nothing
  serves HTTP more cheaply, so the rate it reaches is the load generator's own ceiling.
- ``baseline``: a bare FastAPI app with one trivial GET and one trivial POST route
  (``async def`` handlers, like the gateway's measured routes, and a pydantic body on the
  POST).
- ``gateway``: the real app, ``gateway.api.create_app``, on a fresh data directory under
  ``var/bench/http-*`` with the default SQLite database. Before it starts, the first
  administrator is made (:meth:`IdentityService.bootstrap_admin`), changes the one-time
  password and issues a personal API token. A read is ``GET /api/v1/me`` (token look-up,
  policy check); a write is ``POST /api/v1/me/tokens`` (token look-up, policy check, a new
  token row in the database and its ``api_token.create`` entry appended durably to the
  ledger before the response).

The load generator runs in this process: ``CONNECTIONS`` keep-alive HTTP/1.1 connections
over raw asyncio protocols, each sending pre-built request bytes and the next request as
soon as the previous response is complete (closed loop, one request in flight per
connection). After a warm-up, responses completed in a fixed window are counted and their
latencies (request written to response complete) kept. Every response that is not 2xx,
every lost connection and every request left unanswered counts as an error.

After the run the gateway is stopped, its ledger verified with :func:`audit.verify.verify`
and its new ``api_token.create`` entries counted: there must be exactly one per successful
write.

Run a server by hand with ``python -m bench.http serve {canned,baseline,gateway} --port N
[--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from bench.common import ROOT, VAR, Results, Table, console, percentile, tree_version

HOST = "127.0.0.1"
CONNECTIONS = 16
TARGET_READS = 3_000
TARGET_WRITES = 1_500
TARGET_WRITE_P99_MS = 30.0
WRITE_BODY = b'{"name":"bench","days":1}'
WRITE_ACTION = "api_token.create"
HEALTH = {"canned": "/", "baseline": "/ping", "gateway": "/api/v1/health"}
ANSWER_TIMEOUT = 30.0  # seconds to wait after the window for the last responses
BUSY_MACHINE = 0.2  # other processes' CPU (share of one core) that makes a figure suspect
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class LoadPlan:
    """How hard and how long to push: ``connections`` in a closed loop, ``warmup`` seconds
    not counted, then ``duration`` seconds measured."""

    connections: int = CONNECTIONS
    warmup: float = 2.0
    duration: float = 10.0


FULL = LoadPlan()
QUICK = LoadPlan(warmup=0.5, duration=2.0)


# ---------------------------------------------------------------------- requests
def build_request(
    method: str, path: str, port: int, *, token: str = "", body: bytes = b""
) -> bytes:
    """The bytes of one HTTP/1.1 request, built once and sent as they are every time."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------- load generator
@dataclass
class Figures:
    """What one load run measured. ``requests`` and the latencies cover the measured
    window only; ``statuses``, ``lost`` and ``unanswered`` cover the whole run (warm-up
    and the responses still arriving after the window included)."""

    name: str
    connections: int
    seconds: float
    requests: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    statuses: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    unanswered: int = 0
    client_cpu: float = 0.0  # share of one core in the window: the load generator
    server_cpu: float = 0.0  # the server process, all its threads
    other_cpu: float = 0.0  # every other process on the machine

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def ok(self) -> int:
        """Responses with a 2xx status over the whole run."""
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        failed = sum(count for status, count in self.statuses.items() if not 200 <= status < 300)
        return failed + self.lost + self.unanswered

    @property
    def server_ms_per_request(self) -> float:
        """CPU time the server spent per request answered in the window, in ms."""
        return self.server_cpu * self.seconds / self.requests * 1000 if self.requests else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


class _Run:
    """State shared by the connections of one load run."""

    def __init__(self, request: bytes, plan: LoadPlan, figures: Figures) -> None:
        self.request = request
        self.figures = figures
        now = time.perf_counter_ns()
        self.window_start = now + int(plan.warmup * 1e9)
        self.window_end = self.window_start + int(plan.duration * 1e9)
        self.latencies_ns: list[int] = []

    def answered(self, sent: int, received: int, status: int) -> None:
        self.figures.statuses[status] += 1
        if self.window_start <= received <= self.window_end:
            self.latencies_ns.append(received - sent)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight, the next one sent as soon as a
    response is complete, until the window ends."""

    def __init__(self, run: _Run, finished: asyncio.Future[None]) -> None:
        self.run = run
        self.finished = finished
        self.buffer = bytearray()
        self.sent = 0
        self.waiting = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.waiting = True
        self.sent = time.perf_counter_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        elif b"\r\ntransfer-encoding:" in head:
            # a chunked response: this generator reads only Content-Length bodies, so the
            # request is given up and counted as lost (never silently skipped)
            assert self.transport is not None
            self.transport.close()
            return
        else:
            length = 0
        if len(buffer) < end + 4 + length:
            return
        received = time.perf_counter_ns()
        del buffer[: end + 4 + length]
        self.waiting = False
        self.run.answered(self.sent, received, int(head[9:12]))
        if received < self.run.window_end:
            self._send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:
            self.run.figures.lost += 1
        if not self.finished.done():
            self.finished.set_result(None)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_cpu_seconds() -> float:
    """CPU time every core of the machine has spent busy so far (idle and I/O wait
    excluded), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


async def _generate(name: str, server: Server, request: bytes, plan: LoadPlan) -> Figures:
    figures = Figures(name, plan.connections, plan.duration)
    loop = asyncio.get_running_loop()
    run = _Run(request, plan, figures)
    done: list[asyncio.Future[None]] = [loop.create_future() for _ in range(plan.connections)]
    connections = [
        await loop.create_connection(lambda f=f: _Connection(run, f), HOST, server.port)
        for f in done
    ]
    pid = server.process.pid
    await asyncio.sleep(max(0.0, (run.window_start - time.perf_counter_ns()) / 1e9))
    before = time.process_time(), _cpu_seconds(pid), _machine_cpu_seconds()
    await asyncio.sleep(max(0.0, (run.window_end - time.perf_counter_ns()) / 1e9))
    after = time.process_time(), _cpu_seconds(pid), _machine_cpu_seconds()
    client, serving, machine = (b - a for a, b in zip(before, after, strict=True))
    figures.client_cpu = client / plan.duration
    figures.server_cpu = serving / plan.duration
    figures.other_cpu = max(0.0, machine - client - serving) / plan.duration
    _, pending = await asyncio.wait(done, timeout=ANSWER_TIMEOUT)
    for _, protocol in connections:
        if protocol.finished in pending:
            if protocol.waiting:
                figures.unanswered += 1
            if protocol.transport is not None:
                protocol.transport.abort()
    figures.requests = len(run.latencies_ns)
    figures.latencies_ms = sorted(ns / 1e6 for ns in run.latencies_ns)
    return figures


def generate_load(name: str, server: Server, request: bytes, plan: LoadPlan) -> Figures:
    """Run ``plan`` against ``server`` with ``request`` on every connection."""
    return asyncio.run(_generate(name, server, request, plan))


# ---------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_server(kind: str, log: Path, data_dir: Path | None = None) -> Iterator[Server]:
    """``python -m bench.http serve KIND`` in a child process, until the block ends; then
    stopped with SIGINT (the gateway closes its ledger) and checked to have exited
    cleanly."""
    port = free_port()
    command = [sys.executable, "-m", "bench.http", "serve", kind, "--port", str(port)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    server = Server(kind, port, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    text = log.read_text(errors="replace")
    if process.returncode != 0 or "Traceback" in text:
        raise RuntimeError(f"the {kind} server failed (exit {process.returncode}); see {log}")


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + 60
    url = f"http://{HOST}:{server.port}{HEALTH[server.kind]}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the {server.kind} server exited; see {server.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the {server.kind} server did not answer within 60 s; see {server.log}")


# ---------------------------------------------------------------------- the servers' side
class ItemCreate(BaseModel):
    name: str
    days: int


class ItemCreated(BaseModel):
    id: str
    name: str


def baseline_app() -> FastAPI:
    """A bare FastAPI app: ``GET /ping`` and ``POST /items`` (a pydantic body, 201), with
    ``async def`` handlers like the gateway's ``GET /api/v1/me`` and
    ``POST /api/v1/me/tokens``, so that both sides pay the same for the framework."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/items", status_code=201)
    async def create_item(body: ItemCreate) -> ItemCreated:
        return ItemCreated(id=secrets.token_hex(16), name=body.name)

    return app


class _Canned(asyncio.Protocol):
    """Answers every complete request on the connection with the same bytes."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\ncontent-type: application/json\r\n\r\n"
        b'{"status":"ok"}'
    )

    def __init__(self) -> None:
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.transport.write(self.RESPONSE)


async def _serve_canned(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Canned, HOST, port)
    async with server:
        await server.serve_forever()


def serve(kind: str, port: int, data_dir: Path | None) -> None:
    """Serve ``kind`` until SIGINT: the gateway through ``sbx serve``'s own
    :func:`~gateway.cli.serve.run_gateway`, the bare app with the same uvicorn settings."""
    # A child inherits an ignored SIGINT (from a test runner's worker, say), and then
    # neither asyncio.run nor Python itself would ever stop on it: restore the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if kind == "canned":
        try:
            asyncio.run(_serve_canned(port))
        except KeyboardInterrupt:
            pass
        return
    if kind == "baseline":
        import uvicorn

        from gateway.logs import log_config

        uvicorn.run(baseline_app(), host=HOST, port=port, log_config=log_config(), access_log=False)
        return
    from gateway.api import open_services
    from gateway.cli.serve import run_gateway
    from gateway.settings import Settings

    if data_dir is None:
        raise SystemExit("the gateway needs --data-dir")
    settings = Settings(data_dir=data_dir, database_url=None)
    services = open_services(settings)
    try:
        run_gateway(settings, services, host=HOST, port=port)
    finally:
        services.close()


# ---------------------------------------------------------------------- the gateway's state
@dataclass(frozen=True)
class GatewaySetup:
    token: str  # the administrator's personal API token
    ledger_size: int  # entries in the ledger before the server starts


def prepare_gateway(data_dir: Path) -> GatewaySetup:
    """The first administrator, with a changed password and a personal API token, made
    through the identity service exactly as ``sbx serve`` and the API would."""
    from gateway.api import open_services
    from gateway.cli.serve import OPERATOR_NAME
    from gateway.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=None)
    services = open_services(settings)
    try:
        first = services.identity.bootstrap_admin(
            operator_name=OPERATOR_NAME, credit_code=settings.operator_credit_code
        )
        if first is None:
            raise RuntimeError(f"{data_dir} is not a fresh data directory")
        account, password = first
        services.identity.set_password(account.id, password, secrets.token_urlsafe(16))
        _, token = services.identity.issue_token(account.actor(), name="bench", days=1)
        size = services.ledger.size
    finally:
        services.close()
    return GatewaySetup(token, size)


@dataclass(frozen=True)
class LedgerCheck:
    new_entries: int
    by_action: dict[str, int]
    verified: bool
    problem: str

    @property
    def writes(self) -> int:
        return self.by_action.get(WRITE_ACTION, 0)


def check_ledger(ledger_dir: Path, since: int) -> LedgerCheck:
    """Verify the ledger from scratch and count the entries appended from ``since`` on."""
    from audit import Ledger
    from audit.verify import verify

    report = verify(ledger_dir)
    ledger = Ledger(ledger_dir)
    try:
        actions = Counter(json.loads(body)["action"] for _, body in ledger.entries(since))
    finally:
        ledger.close(checkpoint=False)
    problem = "" if report.problem is None else str(report.problem)
    return LedgerCheck(sum(actions.values()), dict(actions), report.ok, problem)


# ---------------------------------------------------------------------- one run
@dataclass
class HttpRun:
    """Everything :func:`measure` found: the generator's ceiling (if measured), the bare
    routes, the gateway's read and write, and the gateway's ledger afterwards."""

    ceiling: Figures | None
    bare_get: Figures
    bare_post: Figures
    read: Figures
    write: Figures
    ledger: LedgerCheck

    @property
    def all(self) -> list[Figures]:
        found = [self.bare_get, self.bare_post, self.read, self.write]
        return ([self.ceiling] if self.ceiling else []) + found

    @property
    def ledger_matches(self) -> bool:
        """One ``api_token.create`` entry per successful write, and no refusals."""
        return (
            self.ledger.verified
            and self.ledger.writes == self.write.ok
            and self.ledger.by_action.get("request.denied", 0) == 0
        )


def measure(plan: LoadPlan, work_dir: Path, *, ceiling: bool = True) -> HttpRun:
    """Every measurement of this benchmark, with the servers started one at a time (so
    that they never compete for the CPU), their logs and the gateway's data directory in
    ``work_dir``, which must not exist yet."""
    work_dir.mkdir(parents=True)
    canned = None
    if ceiling:
        with running_server("canned", work_dir / "canned.log") as server:
            request = build_request("GET", "/", server.port)
            canned = generate_load(
                "load generator's ceiling: canned responses", server, request, plan
            )
    with running_server("baseline", work_dir / "baseline.log") as server:
        get = build_request("GET", "/ping", server.port)
        post = build_request("POST", "/items", server.port, body=WRITE_BODY)
        bare_get = generate_load("bare FastAPI: GET /ping", server, get, plan)
        bare_post = generate_load("bare FastAPI: POST /items", server, post, plan)
    data_dir = work_dir / "data"
    setup = prepare_gateway(data_dir)
    with running_server("gateway", work_dir / "gateway.log", data_dir) as server:
        token = setup.token
        read = build_request("GET", "/api/v1/me", server.port, token=token)
        write = build_request(
            "POST", "/api/v1/me/tokens", server.port, token=token, body=WRITE_BODY
        )
        reads = generate_load("gateway read: GET /api/v1/me", server, read, plan)
        writes = generate_load("gateway write: POST /api/v1/me/tokens", server, write, plan)
    ledger = check_ledger(data_dir / "ledger", setup.ledger_size)
    return HttpRun(canned, bare_get, bare_post, reads, writes, ledger)


# ---------------------------------------------------------------------- the bench entry point
def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def run(results: Results, *, quick: bool) -> None:
    plan = QUICK if quick else FULL
    VAR.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="http-", dir=VAR))
    outcome = measure(plan, work_dir / "run")
    table = Table(
        f"HTTP requests: one uvicorn worker, {plan.connections} keep-alive connections on "
        f"loopback, {plan.warmup:g} s warm-up, {plan.duration:g} s measured",
        [
            "server: request",
            "requests/s",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "errors",
            "server CPU",
            "server CPU/request (ms)",
            "generator CPU",
            "other CPU",
            "vs bare route",
            "target",
        ],
    )
    read, write = outcome.read, outcome.write
    targets = {
        read.name: f"≥ {TARGET_READS:,}/s [{_verdict(read.rate >= TARGET_READS)}]",
        write.name: f"≥ {TARGET_WRITES:,}/s [{_verdict(write.rate >= TARGET_WRITES)}], "
        f"p99 < {TARGET_WRITE_P99_MS:g} ms [{_verdict(write.p(99) < TARGET_WRITE_P99_MS)}]",
    }
    bare = {read.name: outcome.bare_get, write.name: outcome.bare_post}
    for figures in outcome.all:
        base = bare.get(figures.name)
        table.add(
            figures.name,
            f"{figures.rate:,.0f}",
            f"{figures.p(50):.2f}",
            f"{figures.p(99):.2f}",
            f"{figures.p(100):.2f}",
            f"{figures.errors:,}",
            f"{figures.server_cpu:.0%}",
            f"{figures.server_ms_per_request:.2f}",
            f"{figures.client_cpu:.0%}",
            f"{figures.other_cpu:.0%}",
            f"{figures.rate / base.rate:.2f}x" if base else "",
            targets.get(figures.name, ""),
        )
    ledger = outcome.ledger
    table.notes += [
        "errors: responses other than 2xx, lost connections and unanswered requests over "
        "the whole run (warm-up included); CPU columns: share of one core during the "
        "measured window, for the server process (all threads), the load generator (this "
        "process) and everything else on the machine",
        f"servers: uvicorn {_version('uvicorn')} ({_http_stack()}), FastAPI "
        f"{_version('fastapi')}, one worker each, as sbx serve runs the gateway (JSON log "
        f"lines, uvicorn's access log off); {tree_version('gateway')}",
        f"ledger after the run: {ledger.new_entries:,} new entries ("
        + ", ".join(f"{action} {n:,}" for action, n in sorted(ledger.by_action.items()))
        + f"); {WRITE_ACTION}: {ledger.writes:,} entries for {write.ok:,} successful writes "
        f"[{'MATCH' if outcome.ledger_matches else 'MISMATCH'}]; audit.verify: "
        + ("ok" if ledger.verified else f"FAILED: {ledger.problem}"),
    ]
    results.table(table)
    busy = [f.name for f in outcome.all if f.other_cpu > BUSY_MACHINE]
    if busy:
        console.print(
            f"[bold]warning:[/] other processes used more than {BUSY_MACHINE:.0%} of a core "
            f"during: {'; '.join(busy)}: those figures are not those of an idle machine"
        )
    if not outcome.ledger_matches or any(f.errors for f in outcome.all):
        raise RuntimeError(f"the HTTP benchmark found errors; its files are kept in {work_dir}")
    shutil.rmtree(work_dir)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _http_stack() -> str:
    """What uvicorn picks with its default ``http="auto"``, ``loop="auto"``."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} parser, {loop} event loop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve one of the benchmark's servers")
    serving.add_argument("kind", choices=("canned", "baseline", "gateway"))
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    serve(args.kind, args.port, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
