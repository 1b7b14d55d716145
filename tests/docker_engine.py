"""A Docker engine for the suite: the part of the Engine API that sbx's Docker runtime
uses, served on a Unix socket, running every container's command under bubblewrap.

No Docker engine can run on the machines that run the suite, so the Docker runtime's path
from the hub through the real Docker SDK (``DOCKER_HOST=unix://…``) to running containers
is exercised against this one. It keeps what sbx relies on:

- **containers** run their ``Cmd`` as their ``User`` (uid:gid; the process drops root
  before bubblewrap runs, as the bubblewrap runtime does), with ``WorkingDir``, exactly
  the ``Env`` given, a private ``/tmp`` of the ``Tmpfs`` size and a read-only root;
  ``NetworkMode: none`` is a network namespace of their own with only loopback, any other
  network is the host's (address ``127.0.0.1``, so servers need distinct ports). A
  container of uid 0 (the runtime's one-off step that gives volumes to the sandbox's uid)
  runs its command on the host, on the mounts' host paths.
- **mounts**: binds are resolved by the engine as root, as dockerd does (a source below an
  owner-only folder still works), read-only when asked; volumes are folders of the
  engine's, created on first use; a volume ``Subpath`` must exist when the container
  starts and is all of the volume the container sees.
- **the image** is the host's ``/usr`` with the sandbox's Python environment at its own
  path and the server configuration the sandbox image is built with at
  ``/etc/sbx/jupyter`` (:func:`sandbox.kernel.kernelspec.write_server_config`).
- **the API's rules**: names are unique, a running container is removed only with
  ``force``, a network with members and a volume in use cannot be removed, errors are
  ``{"message": …}`` with dockerd's status codes.

Memory, process and CPU limits and volume sizes are accepted and not enforced (the
bubblewrap runtime's tests cover limits). ``logs`` gives what the container printed, its
errors with its output (as one stream); ``attach`` is not offered.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.kernel.kernelspec import CONFIG_DIR, write_server_config
from sandbox.runtime.bwrap import Binding, Isolation, Profile
from sandbox.runtime.disk import bind_read_only, unmount

API_VERSION = "1.45"
IMAGE = "sbx-sandbox:latest"
SIGNALS = {name: int(getattr(signal, name)) for name in ("SIGINT", "SIGTERM", "SIGKILL", "SIGQUIT")}


class EngineError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Container:
    id: str
    name: str
    config: dict[str, Any]  # the create request's body
    status: str = "created"
    exit_code: int = 0
    networks: dict[str, str] = field(default_factory=dict)  # name -> address
    process: subprocess.Popen[bytes] | None = None
    stages: list[Path] = field(default_factory=list)
    exited: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> dict[str, Any]:
        return dict(self.config.get("HostConfig") or {})

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def inspect(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "Config": {
                "Image": self.config.get("Image"),
                "Cmd": self.config.get("Cmd"),
                "Env": self.config.get("Env"),
                "Labels": self.labels,
                "User": self.config.get("User", ""),
                "WorkingDir": self.config.get("WorkingDir", ""),
                "Tty": bool(self.config.get("Tty")),
            },
            "HostConfig": self.host,
            "State": {
                "Status": self.status,
                "Running": self.status == "running",
                "ExitCode": self.exit_code,
                "Pid": self.process.pid if self.process and self.status == "running" else 0,
            },
            "NetworkSettings": {
                "Networks": {name: {"IPAddress": ip} for name, ip in self.networks.items()}
            },
        }


@dataclass
class Network:
    id: str
    name: str
    internal: bool
    labels: dict[str, str]


@dataclass
class Volume:
    name: str
    driver: str
    options: dict[str, str]
    labels: dict[str, str]
    path: Path


class Engine:
    """The engine's state and what it does; :class:`EngineServer` serves it."""

    def __init__(self, root: Path, python: Path, bwrap: str = "bwrap") -> None:
        self.root = root
        self.python = python
        self.bwrap = shutil.which(bwrap) or bwrap
        self.containers: dict[str, Container] = {}
        self.networks: dict[str, Network] = {}
        self.volumes: dict[str, Volume] = {}
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o711)  # noqa: S103 - traversable for containers' uids, not listable
        for folder in ("volumes", "stages", "logs", "image"):
            (root / folder).mkdir(mode=0o711, exist_ok=True)
        self.config = root / "image" / "jupyter"
        write_server_config(self.config, python)
        self.environment = root / "image" / "python"
        bind_read_only(python, self.environment, "nosuid,nodev")

    def close(self) -> None:
        with self.lock:
            for container in list(self.containers.values()):
                self._kill(container, signal.SIGKILL)
        for container in list(self.containers.values()):
            container.exited.wait(10)
        unmount(self.environment)

    # ------------------------------------------------------------------ lookups
    def container(self, key: str) -> Container:
        with self.lock:
            for container in self.containers.values():
                if key in (container.id, container.name) or (
                    len(key) >= 12 and container.id.startswith(key)
                ):
                    return container
        raise EngineError(404, f"No such container: {key}")

    def network(self, key: str) -> Network:
        with self.lock:
            for network in self.networks.values():
                if key in (network.id, network.name):
                    return network
        raise EngineError(404, f"network {key} not found")

    def volume(self, name: str) -> Volume:
        with self.lock:
            if name in self.volumes:
                return self.volumes[name]
        raise EngineError(404, f"get {name}: no such volume")

    def _new_id(self) -> str:
        return f"{next(self._ids):04x}{os.urandom(30).hex()}"

    # ------------------------------------------------------------------ networks
    def create_network(self, body: dict[str, Any]) -> Network:
        name = str(body.get("Name") or "")
        with self.lock:
            if any(network.name == name for network in self.networks.values()):
                raise EngineError(409, f"network with name {name} already exists")
            network = Network(
                self._new_id(), name, bool(body.get("Internal")), dict(body.get("Labels") or {})
            )
            self.networks[network.id] = network
            return network

    def network_attrs(self, network: Network) -> dict[str, Any]:
        with self.lock:
            members = {
                c.id: {"Name": c.name, "IPv4Address": c.networks[network.name]}
                for c in self.containers.values()
                if network.name in c.networks
            }
        return {
            "Id": network.id,
            "Name": network.name,
            "Driver": "bridge",
            "Internal": network.internal,
            "Labels": dict(network.labels),
            "Containers": members,
        }

    def connect(self, network: Network, key: str) -> None:
        container = self.container(key)
        with self.lock:
            if network.name in container.networks:
                raise EngineError(
                    403, f"endpoint with name {container.name} already exists in {network.name}"
                )
            container.networks[network.name] = "127.0.0.1" if container.status == "running" else ""

    def remove_network(self, network: Network) -> None:
        with self.lock:
            if any(network.name in c.networks for c in self.containers.values()):
                raise EngineError(403, f"network {network.name} has active endpoints")
            del self.networks[network.id]

    # ------------------------------------------------------------------ volumes
    def create_volume(self, body: dict[str, Any]) -> Volume:
        name = str(body.get("Name") or "")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]+", name):
            raise EngineError(400, f"create {name}: invalid volume name")
        driver = str(body.get("Driver") or "local")
        if driver != "local":
            raise EngineError(404, f"error looking up volume plugin {driver}: plugin not found")
        options = dict(body.get("DriverOpts") or {})
        for option in options:
            if option not in {"type", "o", "device", "size"}:
                raise EngineError(400, f"create {name}: invalid option: {option!r}")
        with self.lock:
            if name in self.volumes:
                return self.volumes[name]
            path = self.root / "volumes" / name
            path.mkdir(mode=0o711)
            (path / "_data").mkdir(mode=0o700)  # as the image's mount points are
            volume = Volume(name, driver, options, dict(body.get("Labels") or {}), path / "_data")
            self.volumes[name] = volume
            return volume

    @staticmethod
    def volume_attrs(volume: Volume) -> dict[str, Any]:
        return {
            "Name": volume.name,
            "Driver": volume.driver,
            "Mountpoint": str(volume.path),
            "Options": dict(volume.options) or None,
            "Labels": dict(volume.labels) or None,
        }

    def remove_volume(self, volume: Volume) -> None:
        with self.lock:
            for container in self.containers.values():
                for mount in container.host.get("Mounts") or []:
                    if mount.get("Type") == "volume" and mount.get("Source") == volume.name:
                        raise EngineError(409, f"remove {volume.name}: volume is in use")
            del self.volumes[volume.name]
        shutil.rmtree(volume.path.parent, ignore_errors=True)

    # ------------------------------------------------------------------ containers
    def create_container(self, name: str | None, body: dict[str, Any]) -> Container:
        if body.get("Image") != IMAGE:
            raise EngineError(404, f"No such image: {body.get('Image')}")
        host = dict(body.get("HostConfig") or {})
        mode = host.get("NetworkMode") or "default"
        if mode in ("default", "bridge", "host"):
            raise EngineError(400, f"this engine has no {mode} network: name one, or none")
        networks = {} if mode == "none" else {self.network(mode).name: ""}
        for mount in host.get("Mounts") or []:
            if mount.get("Type") == "bind" and not Path(mount["Source"]).exists():
                raise EngineError(
                    400, f"invalid mount config for type bind: path {mount['Source']} missing"
                )
            if mount.get("Type") == "volume":
                with self.lock:
                    known = mount["Source"] in self.volumes
                if not known:
                    self.create_volume({"Name": mount["Source"]})
        with self.lock:
            name = name or f"container-{next(self._ids)}"
            if any(c.name == name for c in self.containers.values()):
                raise EngineError(409, f'Conflict. The container name "/{name}" is already in use')
            container = Container(self._new_id(), name, body, networks=networks)
            self.containers[container.id] = container
            return container

    def start(self, container: Container) -> None:
        with self.lock:
            if container.status == "running":
                return
            if container.status != "created":
                raise EngineError(409, "this engine does not restart containers")
            container.status = "starting"
        try:
            self._run(container)
        except BaseException:
            with self.lock:
                container.status = "created"
            self._unstage(container)
            raise

    def _run(self, container: Container) -> None:
        user = str(container.config.get("User") or "0:0")
        uid, _, gid = user.partition(":")
        uid_n, gid_n = int(uid), int(gid or uid)
        bindings, sources = self._bindings(container, uid_n, gid_n)
        argv = [str(arg) for arg in container.config.get("Cmd") or []]
        if not argv:
            raise EngineError(400, "no command specified")
        log = self.root / "logs" / f"{container.id}.log"
        if uid_n == 0:
            # The runtime's setup step: its command on the mounts' host paths.
            command = [sources.get(arg, arg) for arg in argv]
            entry = None
        else:
            env = dict(item.split("=", 1) for item in container.config.get("Env") or [])
            isolation = Isolation(
                bindings=bindings,
                env=env,
                profile=Profile.KERNEL if not container.networks else Profile.SERVER,
                tmp_bytes=_tmp_bytes(container.host),
                chdir=str(container.config.get("WorkingDir") or "/"),
            )
            command = isolation.command(argv, self.bwrap)
            entry = _drop_to(uid_n, gid_n)
        started = threading.Event()
        failure: list[BaseException] = []

        def supervise() -> None:
            # bubblewrap dies with the thread that started it: this thread outlives it.
            try:
                with open(log, "ab") as output:
                    process = subprocess.Popen(  # noqa: S603 - the container's own argv
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        preexec_fn=entry,  # noqa: PLW1509
                        start_new_session=True,
                    )
            except OSError as exc:
                failure.append(exc)
                started.set()
                return
            with self.lock:
                container.process = process
                container.status = "running"
                for name in container.networks:
                    container.networks[name] = "127.0.0.1"
            started.set()
            code = process.wait()
            with self.lock:
                container.status = "exited"
                container.exit_code = code if code >= 0 else 128 - code
                container.networks = dict.fromkeys(container.networks, "")
            self._unstage(container)
            container.exited.set()

        threading.Thread(target=supervise, name=f"container-{container.name}", daemon=True).start()
        started.wait()
        if failure:
            raise EngineError(500, f"cannot start {argv[0]}: {failure[0]}")

    def _bindings(
        self, container: Container, uid: int, gid: int
    ) -> tuple[list[Binding], dict[str, str]]:
        """What the container sees, and the host path of each mount's target."""
        stage = self.root / "stages" / container.id
        stage.mkdir(mode=0o711, exist_ok=True)
        container.stages.append(stage)
        bindings = [Binding(self.environment, str(self.python)), Binding(self.config, CONFIG_DIR)]
        sources: dict[str, str] = {}
        for number, mount in enumerate(container.host.get("Mounts") or []):
            target, read_only = str(mount["Target"]), bool(mount.get("ReadOnly"))
            if mount.get("Type") == "bind":
                point = stage / f"bind-{number}"
                if read_only:
                    bind_read_only(Path(mount["Source"]), point, "nosuid,nodev")
                else:
                    point.mkdir(mode=0o755, exist_ok=True)
                    subprocess.run(["mount", "--bind", mount["Source"], str(point)], check=True)  # noqa: S603, S607
                source = point
            elif mount.get("Type") == "volume":
                volume = self.volume(str(mount["Source"]))
                subpath = (mount.get("VolumeOptions") or {}).get("Subpath") or ""
                source = volume.path / subpath if subpath else volume.path
                if subpath and (".." in Path(subpath).parts or not source.is_dir()):
                    raise EngineError(
                        500, f"cannot access path {source}: subpath {subpath!r} does not exist"
                    )
            else:
                raise EngineError(400, f"this engine has no {mount.get('Type')} mounts")
            bindings.append(Binding(source, target, writable=not read_only))
            sources[target] = str(source)
        passwd, group = stage / "passwd", stage / "group"
        passwd.write_text(f"jovyan:x:{uid}:{gid}:jovyan:/home/jovyan:/usr/sbin/nologin\n")
        group.write_text(f"jovyan:x:{gid}:\n")
        bindings += [Binding(passwd, "/etc/passwd"), Binding(group, "/etc/group")]
        return bindings, sources

    def _unstage(self, container: Container) -> None:
        for stage in container.stages:
            for point in sorted(stage.glob("bind-*"), reverse=True):
                unmount(point)
            shutil.rmtree(stage, ignore_errors=True)
        container.stages.clear()

    def kill(self, container: Container, signum: int) -> None:
        with self.lock:
            if container.status != "running":
                raise EngineError(409, f"Container {container.id} is not running")
            self._kill(container, signum)

    def _kill(self, container: Container, signum: int) -> None:
        process = container.process
        if process is not None and container.status == "running":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    def stop(self, container: Container, timeout: float) -> None:
        with self.lock:
            if container.status != "running":
                return
            self._kill(container, signal.SIGTERM)
        if not container.exited.wait(timeout):
            self._kill(container, signal.SIGKILL)
            container.exited.wait(10)

    def wait(self, container: Container) -> int:
        if container.status == "created":
            raise EngineError(409, "the container has not started")
        container.exited.wait()
        return container.exit_code

    def remove(self, container: Container, force: bool) -> None:
        with self.lock:
            if container.status == "running":
                if not force:
                    raise EngineError(409, f"cannot remove container {container.name}: running")
                self._kill(container, signal.SIGKILL)
        if container.status in ("running", "starting"):
            container.exited.wait(10)
        self._unstage(container)
        with self.lock:
            self.containers.pop(container.id, None)

    def listed(self, everything: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = filters.get("label", [])
        if isinstance(wanted, dict):  # {"key=value": true}, the older form
            wanted = list(wanted)
        with self.lock:
            found = []
            for container in self.containers.values():
                if not everything and container.status != "running":
                    continue
                labels = container.labels
                if all(_label_matches(labels, item) for item in wanted):
                    found.append(
                        {
                            "Id": container.id,
                            "Names": [f"/{container.name}"],
                            "Labels": labels,
                            "State": container.status,
                        }
                    )
            return found


def _label_matches(labels: dict[str, str], item: str) -> bool:
    key, _, value = item.partition("=")
    return key in labels and (not value or labels[key] == value)


def _tmp_bytes(host: dict[str, Any]) -> int:
    options = (host.get("Tmpfs") or {}).get("/tmp", "")  # noqa: S108 - the container's
    found = re.search(r"size=(\d+)", options)
    return int(found.group(1)) if found else 64 << 20


def _drop_to(uid: int, gid: int) -> Any:
    def enter() -> None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return enter


# ---------------------------------------------------------------------------------------
# The API


ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"/_ping", "ping"),
    ("GET", r"/version", "version"),
    ("POST", r"/containers/create", "container_create"),
    ("GET", r"/containers/json", "container_list"),
    ("GET", r"/containers/([^/]+)/json", "container_inspect"),
    ("POST", r"/containers/([^/]+)/start", "container_start"),
    ("POST", r"/containers/([^/]+)/kill", "container_kill"),
    ("POST", r"/containers/([^/]+)/stop", "container_stop"),
    ("POST", r"/containers/([^/]+)/wait", "container_wait"),
    ("GET", r"/containers/([^/]+)/logs", "container_logs"),
    ("DELETE", r"/containers/([^/]+)", "container_remove"),
    ("POST", r"/networks/create", "network_create"),
    ("GET", r"/networks/([^/]+)", "network_inspect"),
    ("POST", r"/networks/([^/]+)/connect", "network_connect"),
    ("DELETE", r"/networks/([^/]+)", "network_remove"),
    ("POST", r"/volumes/create", "volume_create"),
    ("GET", r"/volumes/([^/]+)", "volume_inspect"),
    ("DELETE", r"/volumes/([^/]+)", "volume_remove"),
]


class Api:
    """Each route's answer: (status, JSON body or None)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, "OK"

    def version(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {
            "ApiVersion": API_VERSION,
            "MinAPIVersion": "1.24",
            "Version": "26.1.0-sbx-test-engine",
            "Os": "linux",
        }

    def container_create(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        container = self.engine.create_container(query.get("name"), body or {})
        return 201, {"Id": container.id, "Warnings": []}

    def container_list(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        filters = json.loads(query.get("filters") or "{}")
        everything = query.get("all") in ("1", "true", "True")
        return 200, self.engine.listed(everything, filters)

    def container_inspect(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        return 200, self.engine.container(key).inspect()

    def container_start(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        container = self.engine.container(key)
        if container.status == "running":
            return 304, None
        self.engine.start(container)
        return 204, None

    def container_kill(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        given = query.get("signal") or "SIGKILL"
        signum = int(given) if given.isdigit() else SIGNALS.get(given)
        if signum is None:
            raise EngineError(400, f"invalid signal: {given}")
        self.engine.kill(self.engine.container(key), signum)
        return 204, None

    def container_stop(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        container = self.engine.container(key)
        if container.status != "running":
            return 304, None
        self.engine.stop(container, float(query.get("t") or 10))
        return 204, None

    def container_wait(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        code = self.engine.wait(self.engine.container(key))
        return 200, {"StatusCode": code, "Error": None}

    def container_logs(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        follow = query.get("follow") in ("1", "true", "True")
        return 200, Streamed(self.engine, self.engine.container(key), follow)

    def container_remove(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        force = query.get("force") in ("1", "true", "True")
        self.engine.remove(self.engine.container(key), force)
        return 204, None

    def network_create(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        network = self.engine.create_network(body or {})
        return 201, {"Id": network.id, "Warning": ""}

    def network_inspect(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        return 200, self.engine.network_attrs(self.engine.network(key))

    def network_connect(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        self.engine.connect(self.engine.network(key), str((body or {}).get("Container", "")))
        return 200, None

    def network_remove(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        self.engine.remove_network(self.engine.network(key))
        return 204, None

    def volume_create(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 201, self.engine.volume_attrs(self.engine.create_volume(body or {}))

    def volume_inspect(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        return 200, self.engine.volume_attrs(self.engine.volume(key))

    def volume_remove(self, query: dict[str, str], body: Any, key: str) -> tuple[int, Any]:
        self.engine.remove_volume(self.engine.volume(key))
        return 204, None


class Streamed:
    """An answer sent as it is made: Docker's multiplexed log frames (stream 1, output)."""

    def __init__(self, engine: Engine, container: Container, follow: bool) -> None:
        self.engine, self.container, self.follow = engine, container, follow

    def frames(self) -> Iterator[bytes]:
        log = self.engine.root / "logs" / f"{self.container.id}.log"
        offset = 0
        while True:
            ended = self.container.exited.is_set() or self.container.status == "created"
            data = log.read_bytes()[offset:] if log.exists() else b""
            if data:
                offset += len(data)
                yield b"\x01\x00\x00\x00" + len(data).to_bytes(4, "big") + data
            elif ended or not self.follow:
                return
            else:
                time.sleep(0.05)


_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EngineServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the suite reads the engine's state, not its access log."""

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = _VERSION_PREFIX.sub("", unquote(parts.path))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"message": "the body is not JSON"})
            return
        for verb, pattern, name in ROUTES:
            found = re.fullmatch(pattern, path)
            if verb == method and found:
                try:
                    status, answer = getattr(self.server.api, name)(query, body, *found.groups())
                except EngineError as exc:
                    status, answer = exc.status, {"message": exc.message}
                self._send(status, answer)
                return
        self._send(404, {"message": f"page not found: {method} {path}"})

    def _send(self, status: int, answer: Any) -> None:
        if isinstance(answer, Streamed):  # until the container stops, then the end
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for frame in answer.frames():
                self.wfile.write(frame)
                self.wfile.flush()
            return
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", API_VERSION)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("GET")

    def address_string(self) -> str:
        return "unix"


class EngineServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, socket_path: Path, engine: Engine) -> None:
        self.api = Api(engine)
        self.engine = engine
        super().__init__(str(socket_path), _Handler)


class RunningEngine:
    """The engine serving on ``socket`` in a thread of this process (as root)."""

    def __init__(self, python: Path, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="sbx-engine-", dir="/tmp"))  # noqa: S108
        os.chmod(self.folder, 0o711)  # noqa: S103 - containers' uids pass through to root/
        self.socket = self.folder / "docker.sock"
        self.engine = Engine(self.folder / "root", python)
        self.server = EngineServer(self.socket, self.engine)
        os.chmod(self.socket, 0o600)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.engine.close()
        deadline = time.monotonic() + 10
        while any(c.status == "running" for c in self.engine.containers.values()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        shutil.rmtree(self.folder, ignore_errors=True)
