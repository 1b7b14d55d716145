"""Escape suite: code inside a sandbox attacks the bubblewrap runtime, and every attack fails.

Each test plays an applicant's code in a real sandbox (its own uid, namespaces, cgroups and
loop-mounted workspace) and tries to get out of it: reach the network, read what is outside
its views, change the views, gain privileges, exhaust the host's resources, or use links to
reach host files. Each asserts the failure the way the kernel reports it (errno, exit
status) and that the host, and a second sandbox running beside it, are unharmed. The last
tests check the other side: what an applicant is meant to do still works.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import select
import shutil
import socket
import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.runtime.cgroups import cgroup_for
from sandbox.runtime.spec import MIB, Limits, SandboxSpec
from tests.sandboxes import SANDBOX_PYTHON, SandboxFactory, sandboxes  # noqa: F401

pytestmark = pytest.mark.timeout(180)

LIMITS = Limits(memory_bytes=256 * MIB, pids=64, disk_bytes=64 * MIB, tmp_bytes=16 * MIB)
PYTHON = str(SANDBOX_PYTHON / "bin" / "python")
HOST_SETUID = ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount", "/usr/bin/newgrp")
REFUSED_WRITES = {"EROFS", "EACCES"}

# Run before every probe inside a sandbox: ``attempt`` and ``call`` give the errno name
# an action fails with (or "ok"), so tests compare names such as "ECONNREFUSED".
PRELUDE = """\
import ctypes, errno, json, os, signal, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH, WALL = 16, 17, 0x40000000


def attempt(action, *args):
    try:
        action(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"


def call(function, *args):
    ctypes.set_errno(0)
    if function(*args) == -1:
        return errno.errorcode.get(ctypes.get_errno(), "unknown")
    return "ok"


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def visible_names(top, skip):
    \"\"\"Every path under ``top`` outside ``skip`` (the pseudo and the system folders).\"\"\"
    found = []
    for folder, folders, files in os.walk(top):
        folders[:] = [f for f in folders if os.path.join(folder, f) not in skip]
        found += [os.path.join(folder, name) for name in folders + files]
    return found


result = {}
"""

# The second sandbox of the resource tests: answers each line in capitals, and "write" by
# writing a MiB to its own workspace.
NEIGHBOUR = """\
for line in sys.stdin:
    if line.strip() == "write":
        with open("/home/jovyan/alive", "wb") as handle:
            handle.write(b"x" * (1 << 20))
        print("written", flush=True)
    else:
        print(line.strip().upper(), flush=True)
"""


def sandbox_code(body: str, **values: object) -> str:
    """``body`` after the prelude, with ``values`` as module variables."""
    assignments = "".join(f"{name.upper()} = {value!r}\n" for name, value in values.items())
    return PRELUDE + assignments + textwrap.dedent(body)


def probe(
    factory: SandboxFactory, spec: SandboxSpec, body: str, *, timeout: float = 30, **values: object
) -> dict[str, Any]:
    """Run ``body`` in ``spec`` to its end and return the ``result`` dict it filled in."""
    code = sandbox_code(body, **values) + "\nprint(json.dumps(result))\n"
    completed = factory.python(spec, code, timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    loaded: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return loaded


class Running:
    """A Python process kept running in a sandbox, spoken to line by line."""

    def __init__(self, factory: SandboxFactory, spec: SandboxSpec, body: str, **values: object):
        self.spec = spec
        self.process = factory.runtime.launch(
            spec,
            [PYTHON, "-c", sandbox_code(body, **values)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._pending = b""

    def read_line(self, timeout: float = 20) -> str:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from sandbox {self.spec.name} in {timeout} s")
            if select.select([descriptor], [], [], left)[0]:
                chunk = os.read(descriptor, 4096)
                if not chunk:
                    raise EOFError(f"sandbox {self.spec.name} ended: {self.process.poll()}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def ask(self, line: str, timeout: float = 20) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        return self.read_line(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


@contextlib.contextmanager
def running(
    factory: SandboxFactory, spec: SandboxSpec, body: str, **values: object
) -> Iterator[Running]:
    process = Running(factory, spec, body, **values)
    try:
        yield process
    finally:
        process.close()


def host_address() -> str:
    """The host's first IPv4 address that is not loopback."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in shown.splitlines():
        fields = line.split()
        return fields[fields.index("inet") + 1].partition("/")[0]
    raise AssertionError("the host has no non-loopback IPv4 address to aim at")


def fingerprint(*paths: Path) -> dict[str, tuple[object, ...]]:
    """Owner, mode, times and content of ``paths`` and everything under them (links not
    followed), to tell whether anything changed."""
    found: dict[str, tuple[object, ...]] = {}
    for top in paths:
        for path in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            info = path.lstat()
            content = b""
            if stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).digest()
            found[str(path)] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, content)
    return found


def mounts_under(folder: Path) -> list[str]:
    """The host's mount points at or under ``folder``, once per mount (stacked mounts
    count each time)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(folder) or point.startswith(f"{folder}/"):
            points.append(point)
    return points


@dataclass
class HostListeners:
    """A TCP listener and a UDP socket on every host address (stand-ins for the hub's and
    the gateway's ports)."""

    tcp: socket.socket
    udp: socket.socket

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def arrived(self) -> list[str]:
        """What reached the listeners since they were last drained."""
        found = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connection, peer = self.tcp.accept()
                connection.close()
                found.append(f"tcp from {peer}")
        with contextlib.suppress(BlockingIOError):
            while True:
                found.append(f"udp from {self.udp.recvfrom(4096)[1]}")
        return found


@pytest.fixture
def host_listeners() -> Iterator[HostListeners]:
    """Listeners on the host that the host itself can reach (checked), on 0.0.0.0."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind(("0.0.0.0", 0))  # noqa: S104 - every host address is a target
        tcp.listen()
        udp.bind(("0.0.0.0", 0))  # noqa: S104
        listeners = HostListeners(tcp, udp)
        for address in ("127.0.0.1", host_address()):
            with socket.create_connection((address, listeners.tcp_port), timeout=5):
                pass
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"ping", (address, listeners.udp_port))
        time.sleep(0.1)
        tcp.setblocking(False)
        udp.setblocking(False)
        assert len(listeners.arrived()) == 4
        yield listeners


@pytest.fixture
def factory(sandboxes: SandboxFactory) -> Iterator[SandboxFactory]:  # noqa: F811
    """Prepared sandboxes over a views folder holding ``people.csv``, released after the
    test (:func:`tests.sandboxes.sandboxes`). Mounts that release leaves behind (see
    :func:`test_restarts_leave_no_mounts_behind`) are removed too, so the suite leaves
    none on the host."""
    yield sandboxes
    sandboxes.close()
    for point in reversed(mounts_under(sandboxes.root)):
        subprocess.run(["umount", point], check=True, capture_output=True)


@pytest.fixture
def attacker(factory: SandboxFactory) -> SandboxSpec:
    """The sandbox the attacks run in."""
    return factory.make(limits=LIMITS)


@pytest.fixture
def neighbour(factory: SandboxFactory) -> Iterator[Running]:
    """A second sandbox, running beside the attacker's, that must keep answering."""
    with running(factory, factory.make(limits=LIMITS), NEIGHBOUR) as process:
        assert process.ask("ping") == "PING"
        yield process


@pytest.fixture
def private_folder(factory: SandboxFactory) -> Path:
    """A folder like the data directory: root's, 0700, holding vault/, ledger/ and keys/."""
    folder = factory.root / f"private-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    for name in ("vault", "ledger", "keys", "empty"):
        (folder / name).mkdir(mode=0o700)
    key = folder / "keys" / "signing.key"
    key.write_text(f"secret-{secrets.token_hex(16)}\n")
    key.chmod(0o600)
    (folder / "ledger" / "000001.jsonl").write_text('{"seq": 1}\n')
    return folder


# --- Network ----------------------------------------------------------------------------


def test_only_loopback_interface_exists(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """No interface to leave by: the sandbox's network namespace has only ``lo``."""
    result = probe(factory, attacker, "result['interfaces'] = socket.if_nameindex()")
    assert result["interfaces"] == [[1, "lo"]]
    assert len(socket.if_nameindex()) > 1  # the host has more


def test_no_tcp_to_host_loopback(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    host_listeners: HostListeners,
) -> None:
    """The hub's and the gateway's ports on the host's 127.0.0.1 cannot be reached: the
    sandbox's 127.0.0.1 is its own loopback, where nothing listens."""
    body = """
    with socket.socket() as client:
        client.settimeout(5)
        result["connect"] = attempt(client.connect, ("127.0.0.1", PORT))
    """
    result = probe(factory, attacker, body, port=host_listeners.tcp_port)
    assert result["connect"] == "ECONNREFUSED"
    assert host_listeners.arrived() == []


def test_no_udp_to_host_loopback(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    host_listeners: HostListeners,
) -> None:
    """A datagram to the host's 127.0.0.1 lands on the sandbox's own loopback, which
    answers that nothing listens (ECONNREFUSED on the next receive)."""
    body = """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.connect(("127.0.0.1", PORT))
        result["send"] = attempt(client.send, b"escape")
        result["receive"] = attempt(client.recv, 100)
    """
    result = probe(factory, attacker, body, port=host_listeners.udp_port)
    assert result == {"send": "ok", "receive": "ECONNREFUSED"}
    time.sleep(0.2)
    assert host_listeners.arrived() == []


def test_no_tcp_or_udp_to_host_address(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    host_listeners: HostListeners,
) -> None:
    """The host's own non-loopback address has no route from the sandbox."""
    body = """
    with socket.socket() as client:
        client.settimeout(5)
        result["tcp"] = attempt(client.connect, (ADDRESS, TCP_PORT))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        result["udp"] = attempt(client.sendto, b"escape", (ADDRESS, UDP_PORT))
    """
    result = probe(
        factory,
        attacker,
        body,
        address=host_address(),
        tcp_port=host_listeners.tcp_port,
        udp_port=host_listeners.udp_port,
    )
    assert result == {"tcp": "ENETUNREACH", "udp": "ENETUNREACH"}
    time.sleep(0.2)
    assert host_listeners.arrived() == []


def test_no_route_to_outside_address(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """Nothing outside the host (1.1.1.1:53, TCP and UDP) can be reached."""
    body = """
    with socket.socket() as client:
        client.settimeout(5)
        result["tcp"] = attempt(client.connect, ("1.1.1.1", 53))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        result["udp"] = attempt(client.sendto, b"escape", ("1.1.1.1", 53))
    """
    assert probe(factory, attacker, body) == {"tcp": "ENETUNREACH", "udp": "ENETUNREACH"}


def test_no_dns_resolution(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """No name resolves, so no exfiltration through DNS queries either."""
    body = """
    try:
        result["resolved"] = [a[4][0] for a in socket.getaddrinfo("pypi.org", 443)]
    except socket.gaierror as exc:
        result["error"] = exc.errno
    """
    result = probe(factory, attacker, body)
    assert "resolved" not in result
    assert result["error"] in (socket.EAI_AGAIN, socket.EAI_NONAME, socket.EAI_FAIL)


def test_no_host_abstract_unix_socket(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """Abstract Unix sockets belong to a network namespace: one the host listens on (which
    the host itself reaches) does not exist for the sandbox."""
    name = f"\0sbx-escape-{secrets.token_hex(8)}".encode()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        server.setblocking(False)
        with socket.socket(socket.AF_UNIX) as own:
            own.connect(name)
            server.accept()[0].close()
        body = """
        with socket.socket(socket.AF_UNIX) as client:
            result["connect"] = attempt(client.connect, NAME)
        """
        assert probe(factory, attacker, body, name=name) == {"connect": "ECONNREFUSED"}
        with pytest.raises(BlockingIOError):
            server.accept()


LISTENER = """\
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
unix = socket.socket(socket.AF_UNIX)
unix.bind(NAME)
unix.listen()
for server, address in ((tcp, tcp.getsockname()), (unix, NAME)):
    with socket.socket(server.family) as own:
        own.connect(address)
        server.accept()[0].close()
    server.setblocking(False)
print(tcp.getsockname()[1], flush=True)
for line in sys.stdin:
    arrived = 0
    for server in (tcp, unix):
        try:
            server.accept()[0].close()
            arrived += 1
        except BlockingIOError:
            pass
    print(arrived, flush=True)
"""


def test_no_connection_to_another_sandbox(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """A second sandbox listening (TCP on its loopback, an abstract Unix socket), reachable
    from inside itself, cannot be reached from the first."""
    name = f"\0sbx-listener-{secrets.token_hex(8)}".encode()
    with running(factory, factory.make(limits=LIMITS), LISTENER, name=name) as listener:
        port = int(listener.read_line())
        body = """
        with socket.socket() as client:
            client.settimeout(5)
            result["tcp"] = attempt(client.connect, ("127.0.0.1", PORT))
        with socket.socket(socket.AF_UNIX) as client:
            result["unix"] = attempt(client.connect, NAME)
        """
        result = probe(factory, attacker, body, port=port, name=name)
        assert result == {"tcp": "ECONNREFUSED", "unix": "ECONNREFUSED"}
        assert listener.ask("arrived?") == "0"


# --- Reading ----------------------------------------------------------------------------


def test_private_folder_is_invisible(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    private_folder: Path,
) -> None:
    """The owner-only data directory (vault, ledger, keys) cannot be seen or read by any
    path: its own, through /proc's root links, or by climbing out of the mounts."""
    key = private_folder / "keys" / "signing.key"
    secret = key.read_text().strip()
    body = """
    prefixes = ["", "/proc/self/root", "/proc/1/root", f"/proc/{HOST_PID}/root",
                "/data/../..", "/home/jovyan/../..", "/run/sbx/../../.."]
    result["stat"] = {}
    result["read"] = {}
    for prefix in prefixes:
        result["stat"][prefix + FOLDER] = attempt(os.stat, prefix + FOLDER)
        result["read"][prefix + KEY] = attempt(read, prefix + KEY)
    skip = {"/proc", "/sys", "/dev", "/usr", PYTHON_ENV}
    names = visible_names("/", skip)
    result["named"] = [n for n in names if FOLDER_NAME in n or "signing.key" in n]
    result["holding_secret"] = [
        n for n in names if os.path.isfile(n) and os.access(n, os.R_OK) and SECRET in read(n)
    ]
    """
    result = probe(
        factory,
        attacker,
        body,
        host_pid=os.getpid(),
        folder=str(private_folder),
        folder_name=private_folder.name,
        key=str(key),
        secret=secret.encode(),
        python_env=str(SANDBOX_PYTHON),
    )
    assert set(result["stat"].values()) == {"ENOENT"}, result["stat"]
    assert set(result["read"].values()) == {"ENOENT"}, result["read"]
    assert result["named"] == []
    assert result["holding_secret"] == []


def test_etc_shadow_is_absent(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """The host's password hashes are not in the sandbox (nor readable by its uid)."""
    body = """
    for path in ("/etc/shadow", "/etc/gshadow", "/proc/1/root/etc/shadow"):
        result[path] = attempt(read, path)
    """
    result = probe(factory, attacker, body)
    assert set(result.values()) <= {"ENOENT", "EACCES"}, result
    assert Path("/etc/shadow").exists()  # the host has one, so there is something to miss


def test_other_sandbox_workspace_is_invisible(
    factory: SandboxFactory,
    attacker: SandboxSpec,
) -> None:
    """Another applicant's workspace (and stage, and state) cannot be seen by any path."""
    other = factory.make(limits=LIMITS)
    marker = f"notes-{secrets.token_hex(6)}.txt"
    written = factory.python(other, f"open('/home/jovyan/{marker}', 'w').write('mine')")
    assert written.returncode == 0, written.stderr
    assert (other.workspace / marker).read_text() == "mine"
    body = """
    for path in PATHS:
        result[path] = attempt(os.stat, path)
    skip = {"/proc", "/sys", "/dev", "/usr", PYTHON_ENV}
    result["named"] = [n for n in visible_names("/", skip) if MARKER in n]
    """
    paths = [other.workspace / marker, other.workspace, other.stage, other.state]
    paths += [attacker.workspace, factory.root]
    values = {"paths": [str(p) for p in paths], "marker": marker, "python_env": str(SANDBOX_PYTHON)}
    result = probe(factory, attacker, body, **values)
    assert result.pop("named") == []
    assert set(result.values()) == {"ENOENT"}, result


def test_proc_shows_only_own_processes(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """/proc is the sandbox's own pid namespace: the host's processes (this test's among
    them) are neither listed nor signalable, and pid 1 is the sandbox's own init."""
    body = """
    result["pids"] = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    result["signal_host"] = attempt(os.kill, HOST_PID, 0)
    result["init"] = read("/proc/1/cmdline").decode().split("\\0")
    """
    result = probe(factory, attacker, body, host_pid=os.getpid())
    assert os.getpid() not in result["pids"]
    assert result["pids"] == [1, 2]  # the sandbox's init and this Python
    assert result["signal_host"] == "ESRCH"
    assert Path(result["init"][0]).name == "bwrap"
    assert str(attacker.workspace) in result["init"]
    assert Path("/proc/1/cmdline").read_bytes().decode().split("\0") != result["init"]


# --- Writing the views, the root and /usr ----------------------------------------------


def test_views_cannot_be_changed(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """Writing, appending, truncating, deleting, renaming, chmod and creating in /data all
    fail, and the views on the host are unchanged."""
    before = fingerprint(factory.views)
    body = """
    view = "/data/people.csv"
    result["create"] = attempt(lambda: open("/data/new.csv", "w").close())
    result["append"] = attempt(lambda: open(view, "a").close())
    result["truncate"] = attempt(os.truncate, view, 0)
    result["delete"] = attempt(os.remove, view)
    result["rename"] = attempt(os.rename, view, "/data/moved.csv")
    result["chmod"] = attempt(os.chmod, view, 0o777)
    result["utime"] = attempt(os.utime, view, (0, 0))
    result["mkdir"] = attempt(os.mkdir, "/data/folder")
    result["symlink"] = attempt(os.symlink, "/etc/passwd", "/data/link")
    result["chmod_folder"] = attempt(os.chmod, "/data", 0o777)
    """
    result = probe(factory, attacker, body)
    assert set(result.values()) <= REFUSED_WRITES, result
    assert fingerprint(factory.views) == before


def test_root_and_usr_are_read_only(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """Nothing can be written to /, /etc, /usr or the Python environment."""
    name = f"escape-{secrets.token_hex(6)}"
    body = """
    result["/"] = attempt(lambda: open("/" + NAME, "w").close())
    result["/etc"] = attempt(lambda: open("/etc/" + NAME, "w").close())
    result["/etc/passwd"] = attempt(lambda: open("/etc/passwd", "a").close())
    result["/usr"] = attempt(os.mkdir, "/usr/" + NAME)
    result["/usr/bin/python3"] = attempt(lambda: open("/usr/bin/python3", "a").close())
    result["python env"] = attempt(lambda: open(PYTHON_ENV + "/" + NAME, "w").close())
    """
    result = probe(factory, attacker, body, name=name, python_env=str(SANDBOX_PYTHON))
    assert set(result.values()) <= REFUSED_WRITES, result
    for folder in ("/", "/etc", "/usr", str(SANDBOX_PYTHON)):
        assert not Path(folder, name).exists()


# --- Escalating -------------------------------------------------------------------------


def test_no_capabilities(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """The effective, permitted, inheritable, bounding and ambient sets are empty, and no
    new privileges can be gained."""
    body = """
    for line in read("/proc/self/status").decode().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap") or key in ("NoNewPrivs", "Uid", "Gid"):
            result[key] = value.split()
    """
    result = probe(factory, attacker, body)
    for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(result[key][0], 16) == 0, key
    assert result["NoNewPrivs"] == ["1"]
    assert result["Uid"] == [str(attacker.uid)] * 4
    assert result["Gid"] == [str(attacker.gid)] * 4


def test_setuid_binaries_give_no_root(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """The host's setuid-root programs, and a setuid-root copy of ``id`` put in the
    workspace, run with the sandbox's uid: ``id -u`` says so and ``mount`` is refused."""
    present = [path for path in HOST_SETUID if Path(path).exists()]
    assert present
    for path in present:
        info = os.stat(path)
        assert info.st_uid == 0 and info.st_mode & stat.S_ISUID, path
    planted = attacker.workspace / "id"
    shutil.copy("/usr/bin/id", planted)
    os.chown(planted, 0, 0)
    planted.chmod(0o4755)
    body = """
    def run(*argv):
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10)
        return [done.returncode, done.stdout.strip(), done.stderr.strip()]

    result["planted"] = run("/home/jovyan/id", "-u")
    result["mount"] = run("/usr/bin/mount", "-t", "tmpfs", "none", "/home/jovyan")
    for path in PRESENT:
        if path != "/usr/bin/mount":  # without arguments it only lists the mounts
            result[path] = run(path)
    """
    result = probe(factory, attacker, body, present=present)
    assert result.pop("planted") == [0, str(attacker.uid), ""]
    exit_status, _, message = result.pop("mount")
    assert exit_status == 32
    assert "must be superuser" in message
    for path, (exit_status, _, message) in result.items():
        assert exit_status != 0, (path, message)


def test_mount_syscall_fails(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """mount(2) is refused: no tmpfs over /tmp, no remounting /data writable."""
    body = """
    result["tmpfs"] = call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
    result["remount"] = call(libc.mount, b"none", b"/data", None, 0x20 | 0x1000, None)
    result["bind"] = call(libc.mount, b"/home/jovyan", b"/data", None, 0x1000, None)
    """
    assert probe(factory, attacker, body) == {
        "tmpfs": "EPERM",
        "remount": "EPERM",
        "bind": "EPERM",
    }


def test_no_new_user_or_mount_namespace(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """unshare(CLONE_NEWUSER), the way to regain capabilities, fails (user namespaces are
    disabled), as do new mount and network namespaces."""
    body = """
    result["user"] = call(libc.unshare, 0x10000000)
    result["mount"] = call(libc.unshare, 0x00020000)
    result["net"] = call(libc.unshare, 0x40000000)
    """
    result = probe(factory, attacker, body)
    assert result["user"] in ("EPERM", "ENOSPC")
    assert result["mount"] == "EPERM"
    assert result["net"] == "EPERM"


def test_no_ptrace_or_signal_to_another_sandbox(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    neighbour: Running,
) -> None:
    """The processes of another sandbox, by their host pids, do not exist for this one:
    PTRACE_ATTACH and kill both fail with ESRCH, and the other sandbox keeps answering."""
    cgroup = factory.runtime.cgroup(neighbour.spec)
    assert cgroup is not None
    targets = sorted(cgroup.pids())
    assert targets
    body = """
    for pid in TARGETS:
        result[f"ptrace {pid}"] = call(libc.ptrace, PTRACE_ATTACH, pid, None, None)
        result[f"kill {pid}"] = attempt(os.kill, pid, signal.SIGKILL)
    """
    result = probe(factory, attacker, body, targets=targets)
    assert len(result) == 2 * len(targets)
    assert set(result.values()) == {"ESRCH"}, result
    assert neighbour.ask("still there") == "STILL THERE"


def test_ptrace_of_sandbox_init_gains_nothing(
    factory: SandboxFactory,
    attacker: SandboxSpec,
) -> None:
    """Pid 1 of the sandbox is its own bubblewrap init, running as the same uid: attaching
    to it is allowed, but it holds no capabilities and no descriptor to anything outside
    (only /dev/null, its pipes and an eventfd), so nothing is gained; after detaching,
    the sandbox ends normally."""
    body = """
    result["attach"] = call(libc.ptrace, PTRACE_ATTACH, 1, None, None)
    if result["attach"] == "ok":
        os.waitpid(1, WALL)
    status = dict(line.split(":", 1) for line in read("/proc/1/status").decode().splitlines())
    result["caps"] = [int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")]
    result["uid"] = status["Uid"].split()
    result["descriptors"] = [os.readlink(f"/proc/1/fd/{fd}") for fd in os.listdir("/proc/1/fd")]
    if result["attach"] == "ok":
        result["detach"] = call(libc.ptrace, PTRACE_DETACH, 1, None, None)
    """
    result = probe(factory, attacker, body)
    assert result["attach"] in ("ok", "EPERM")
    assert result["caps"] == [0, 0, 0, 0]
    assert result["uid"] == [str(attacker.uid)] * 4
    for target in result["descriptors"]:
        assert target == "/dev/null" or target.startswith(("pipe:", "anon_inode:")), target
    assert result.get("detach", "ok") == "ok"


def test_chroot_and_setuid_fail(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """chroot(2) and setuid(0)/setgid(0) fail, and the uid stays the sandbox's."""
    body = """
    result["chroot"] = attempt(os.chroot, "/tmp")
    result["setuid"] = attempt(os.setuid, 0)
    result["setgid"] = attempt(os.setgid, 0)
    result["setgroups"] = attempt(os.setgroups, [0])
    result["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
    """
    result = probe(factory, attacker, body)
    assert result.pop("ids") == [attacker.uid, attacker.uid, attacker.gid, attacker.gid]
    assert result.pop("chroot") == "EPERM"
    # EINVAL: root is not even mapped in the sandbox's user namespace
    assert set(result.values()) <= {"EPERM", "EINVAL"}, result


# --- Resource abuse ---------------------------------------------------------------------

FORK_BOMB = """\
forked = 0
while forked < 4 * LIMIT:
    try:
        pid = os.fork()
    except OSError as exc:
        print("blocked", forked, exc.errno, flush=True)
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    forked += 1
else:
    print("unbounded", forked, 0, flush=True)
sys.stdin.read()
"""


def test_fork_bomb_hits_pids_limit(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    neighbour: Running,
) -> None:
    """A fork bomb stops at the pids limit (fork fails with EAGAIN), the host and another
    sandbox still work, and releasing the sandbox ends every process of it."""
    cgroup = factory.runtime.cgroup(attacker)
    assert cgroup is not None
    with running(factory, attacker, FORK_BOMB, limit=LIMITS.pids) as bomb:
        outcome, forked, code = bomb.read_line(timeout=60).split()
        assert (outcome, int(code)) == ("blocked", errno.EAGAIN)
        assert int(forked) < LIMITS.pids
        assert len(cgroup.pids()) <= LIMITS.pids
        assert subprocess.run(["true"], check=False).returncode == 0
        assert neighbour.ask("after the bomb") == "AFTER THE BOMB"
        factory.runtime.release(attacker)
        assert bomb.process.wait(timeout=15) != 0
        assert cgroup.pids() == set()
        assert not any(folder.exists() for folder in cgroup.folders)
    assert neighbour.ask("released") == "RELEASED"


MEMORY_HOG = """\
chunks = []
for _ in range(64):  # 1 GiB, four times the limit
    chunks.append(b"x" * (16 << 20))
    print(len(chunks), flush=True)
"""


def test_memory_hog_is_killed(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    neighbour: Running,
) -> None:
    """Allocating past the memory limit gets the sandbox's process killed by the OOM
    killer (SIGKILL) near the limit, while another sandbox keeps answering."""
    cgroup = factory.runtime.cgroup(attacker)
    assert cgroup is not None
    completed = factory.python(attacker, sandbox_code(MEMORY_HOG), timeout=60)
    assert completed.returncode in (-9, 128 + 9), completed.stderr
    allocated = int(completed.stdout.split()[-1]) * 16 * MIB
    assert allocated <= LIMITS.memory_bytes
    assert cgroup.oom_kills() >= 1
    assert neighbour.ask("after the hog") == "AFTER THE HOG"


FILL = """\
written = 0
chunk = b"x" * (1 << 20)
try:
    for number in range(FILES):
        with open(f"{FOLDER}/fill-{number}", "wb", buffering=0) as handle:
            while written < BOUND * (number + 1) // FILES:
                written += handle.write(chunk)
    result["errno"] = "none"
except OSError as exc:
    result["errno"] = errno.errorcode[exc.errno]
result["written"] = written
if CLEAN:
    for number in range(FILES):
        if os.path.exists(f"{FOLDER}/fill-{number}"):
            os.remove(f"{FOLDER}/fill-{number}")
"""


def test_filling_workspace_ends_in_enospc(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    neighbour: Running,
) -> None:
    """Filling the workspace stops at about its size with ENOSPC (or EFBIG); the host's
    disk only lends the image's blocks, and another sandbox can still write."""
    free = shutil.disk_usage(factory.root).free
    values = {"folder": "/home/jovyan", "files": 1, "bound": 2 * LIMITS.disk_bytes}
    result = probe(factory, attacker, FILL, clean=False, timeout=60, **values)
    assert result["errno"] in ("ENOSPC", "EFBIG")
    assert LIMITS.disk_bytes // 2 <= result["written"] <= LIMITS.disk_bytes
    image = (attacker.state / "workspace.img").stat()
    assert image.st_size == LIMITS.disk_bytes
    assert image.st_blocks * 512 <= LIMITS.disk_bytes
    assert free - shutil.disk_usage(factory.root).free < LIMITS.disk_bytes + 128 * MIB
    assert neighbour.ask("write") == "written"


def test_filling_tmp_ends_in_enospc(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    neighbour: Running,
) -> None:
    """Filling /tmp stops at its size with ENOSPC; another sandbox keeps answering."""
    values = {"folder": "/tmp", "files": 1, "bound": 2 * LIMITS.tmp_bytes}
    result = probe(factory, attacker, FILL, clean=False, **values)
    assert result["errno"] == "ENOSPC"
    assert LIMITS.tmp_bytes - 2 * MIB <= result["written"] <= LIMITS.tmp_bytes
    assert neighbour.ask("after /tmp") == "AFTER /TMP"


def test_filling_run_sbx_ends_in_enospc(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """/run/sbx, the sandbox's other writable folder, must be bounded too: writing more
    than the workspace and /tmp together (in files each under the per-file limit) ends in
    ENOSPC or EDQUOT rather than on the host's disk."""
    bound = LIMITS.disk_bytes + LIMITS.tmp_bytes + 16 * MIB
    values = {"folder": "/run/sbx", "files": 8, "bound": bound}
    result = probe(factory, attacker, FILL, clean=True, timeout=60, **values)
    assert result["errno"] in ("ENOSPC", "EDQUOT"), (
        f"wrote {result['written'] // MIB} MiB to the host's disk through /run/sbx"
    )


def test_restarts_leave_no_mounts_behind(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """Restarting again and again (release, then prepare) must not grow the host's mount
    table: a released sandbox keeps nothing mounted on its stage, and a prepared one has
    its views, its workspace and its sockets' tmpfs mounted once each."""
    left_after_release = []
    for _ in range(3):
        factory.runtime.release(attacker)
        left_after_release.append(mounts_under(attacker.stage))
        factory.runtime.prepare(attacker)
    assert left_after_release == [[], [], []]
    assert sorted(mounts_under(attacker.stage)) == sorted(
        [str(m) for m in (attacker.data, attacker.workspace, attacker.run, attacker.environment)]
    )


# --- Links ------------------------------------------------------------------------------


def test_symlink_to_host_path_resolves_inside_sandbox(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    private_folder: Path,
) -> None:
    """Symlinks in the workspace to host paths (the data directory's key, /etc/shadow, the
    host's stage) resolve in the sandbox's own view, where those paths do not exist."""
    key = private_folder / "keys" / "signing.key"
    targets = [key, private_folder, Path("/etc/shadow"), attacker.workspace / "link-0"]
    assert all(target.parent.exists() for target in targets)
    body = """
    for number, target in enumerate(TARGETS):
        link = f"/home/jovyan/link-{number}"
        os.symlink(target, link)
        result[target] = [attempt(read, link), attempt(os.listdir, link)]
    """
    result = probe(factory, attacker, body, targets=[str(t) for t in targets])
    for target, (reading, listing) in result.items():
        assert reading == "ENOENT" and listing == "ENOENT", target


def test_hard_link_out_of_workspace_fails(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    """A hard link from the workspace (or /tmp, or /run/sbx) to a file outside it, such as
    a view or a system binary, fails across the mount boundary."""
    body = """
    for source in ("/data/people.csv", "/usr/bin/python3", "/etc/passwd"):
        for folder in ("/home/jovyan", "/tmp", "/run/sbx"):
            result[f"{source} -> {folder}"] = attempt(os.link, source, folder + "/hard")
    """
    result = probe(factory, attacker, body)
    assert len(result) == 9
    assert set(result.values()) <= {"EXDEV", "EPERM"}, result


PLANT_LINKS = """
for name, target in TARGETS.items():
    os.symlink(target, f"/home/jovyan/{name}")
    os.symlink(target, f"/run/sbx/{name}")
result["planted"] = sorted(os.listdir("/home/jovyan"))
"""


def plant_links(
    factory: SandboxFactory, spec: SandboxSpec, private_folder: Path
) -> dict[str, tuple[object, ...]]:
    """Leave symlinks to host files in ``spec``'s workspace and /run/sbx (``lost+found``
    among them, which the runtime handles), and return the targets' fingerprint."""
    targets = {
        "key": private_folder / "keys" / "signing.key",
        "ledger": private_folder / "ledger",
        "lost+found": private_folder / "empty",
        "views": factory.views,
        "shadow": Path("/etc/shadow"),
    }
    result = probe(factory, spec, PLANT_LINKS, targets={k: str(v) for k, v in targets.items()})
    assert result["planted"] == sorted(targets)
    return fingerprint(*targets.values())


def test_release_does_not_follow_links_left_in_workspace(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    private_folder: Path,
) -> None:
    """Releasing a sandbox that left symlinks to host files in its workspace and /run/sbx
    changes none of the targets."""
    before = plant_links(factory, attacker, private_folder)
    factory.runtime.release(attacker)
    assert not os.path.ismount(attacker.workspace)
    assert fingerprint(*map(Path, before)) == before


def test_restart_does_not_follow_links_left_in_workspace(
    factory: SandboxFactory,
    attacker: SandboxSpec,
    private_folder: Path,
) -> None:
    """Preparing the sandbox again after it left symlinks to host files in its workspace
    follows none of them: the restart succeeds and the targets are unchanged."""
    before = plant_links(factory, attacker, private_folder)
    factory.runtime.release(attacker)
    factory.runtime.prepare(attacker)
    assert fingerprint(*map(Path, before)) == before
    assert (attacker.workspace / "key").is_symlink()


# --- What an applicant is meant to do ---------------------------------------------------


def test_python_runs_and_prints(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    completed = factory.python(attacker, "print(sum(range(10)), 'in', __import__('os').getcwd())")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "45 in /home/jovyan\n"


def test_analysis_libraries_import(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    body = """
    import diffprivlib, numpy, pandas
    result["versions"] = [numpy.__version__, pandas.__version__, diffprivlib.__version__]
    result["mean"] = float(numpy.mean([1, 2, 3]))
    """
    result = probe(factory, attacker, body, timeout=60)
    assert result["mean"] == 2.0
    assert all(result["versions"])


def test_view_loads_with_pandas(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    body = """
    import pandas
    frame = pandas.read_csv("/data/people.csv")
    result["columns"] = list(frame.columns)
    result["rows"] = frame.values.tolist()
    """
    result = probe(factory, attacker, body, timeout=60)
    assert result["columns"] == ["district", "age_band", "count"]
    assert result["rows"] == [["市南区", "30-39", 12], ["崂山区", "40-49", 15]]


def test_workspace_persists_across_restart(factory: SandboxFactory, attacker: SandboxSpec) -> None:
    text = f"results {secrets.token_hex(6)}"
    write = f"open('/home/jovyan/results.txt', 'w').write({text!r})"
    assert factory.python(attacker, write).returncode == 0
    factory.runtime.release(attacker)
    assert not os.path.ismount(attacker.workspace)
    factory.runtime.prepare(attacker)
    completed = factory.python(attacker, "print(open('/home/jovyan/results.txt').read())")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == text + "\n"


def test_an_environment_below_an_owner_only_folder_still_runs(factory: SandboxFactory) -> None:
    """The sandbox's uid may have no path to where sbx is installed (a checkout below an
    owner-only folder): the runtime puts the Python environment on the stage itself."""
    private = factory.root / "private"
    private.mkdir(mode=0o700)
    hidden = private / "env"
    hidden.mkdir()
    subprocess.run(["mount", "--bind", str(SANDBOX_PYTHON), str(hidden)], check=True)
    spec = factory.make(limits=LIMITS, python=hidden)
    code = "import pandas, sys; print(sys.prefix)"
    completed = factory.run(spec, [str(hidden / "bin" / "python"), "-c", code])
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(hidden)


def test_a_group_left_behind_with_smaller_limits_takes_the_new_ones(
    factory: SandboxFactory,
) -> None:
    """A control group left by an earlier run (a crash, other settings) must not keep a
    sandbox from starting, nor hold it to the old limits."""
    name = f"left{os.getpid()}"
    left = cgroup_for(name)
    assert left is not None
    left.create(Limits(memory_bytes=128 * MIB, pids=16))
    spec = factory.make(name, limits=LIMITS)
    memory = Path("/sys/fs/cgroup/memory/sbx") / name
    assert int((memory / "memory.limit_in_bytes").read_text()) == LIMITS.memory_bytes
    assert factory.python(spec, "print('up')").stdout == "up\n"
