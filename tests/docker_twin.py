"""An in-memory twin of the part of the Docker engine that sbx's Docker runtime uses,
with the client objects of the Docker SDK (``docker.DockerClient``'s ``containers``,
``networks`` and ``volumes``).

The twin turns ``containers.create`` arguments into the request the real SDK would send
(``docker.models.containers._create_container_args``, so misspelt or unsupported options
fail here as they would there) and keeps the engine's rules that matter to sbx: names are
unique, ``containers.list`` shows only running containers unless ``all=True``, objects
are snapshots until ``reload()``, a volume in use or a network with members cannot be
removed, a missing volume named in a mount is created on the fly, the ``local`` volume
driver refuses a ``size`` without XFS project quotas, a bind source must exist. Nothing
runs: ``programs`` says what a command does when started (:mod:`tests.docker_engine` is
the engine that runs containers).
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import _create_container_args

IMAGE = "sbx-sandbox:latest"
API_VERSION = "1.44"
LOCAL_VOLUME_OPTIONS = {"type", "o", "device", "size"}

# ---------------------------------------------------------------------------------------
# The twin


def _labels_match(labels: Mapping[str, str], filters: Mapping[str, Any] | None) -> bool:
    wanted = (filters or {}).get("label", [])
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, _, value = item.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


@dataclasses.dataclass
class ContainerRecord:
    id: str
    name: str
    image: str
    command: list[str]
    request: dict[str, Any]  # what the SDK would send: create args with host_config
    status: str = "created"
    exit_code: int = 0
    networks: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> IP

    @property
    def host_config(self) -> dict[str, Any]:
        return dict(self.request["host_config"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.request.get("labels") or {})

    def attrs(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "Config": {
                "Image": self.image,
                "Cmd": list(self.command),
                "Env": dict(self.request.get("environment") or {}),
                "Labels": self.labels,
                "User": self.request.get("user", ""),
                "WorkingDir": self.request.get("working_dir", ""),
            },
            "HostConfig": self.host_config,
            "State": {
                "Status": self.status,
                "Running": self.status == "running",
                "ExitCode": self.exit_code,
            },
            "NetworkSettings": {
                "Networks": {name: {"IPAddress": ip} for name, ip in self.networks.items()}
            },
        }


@dataclasses.dataclass
class NetworkRecord:
    id: str
    name: str
    driver: str
    internal: bool
    labels: dict[str, str]
    subnet: int

    def attrs(self, engine: FakeDocker) -> dict[str, Any]:
        members = {
            record.id: {"Name": record.name, "IPv4Address": record.networks[self.name]}
            for record in engine.records.values()
            if self.name in record.networks
        }
        return {
            "Id": self.id,
            "Name": self.name,
            "Driver": self.driver,
            "Internal": self.internal,
            "Labels": dict(self.labels),
            "Containers": members,
        }


@dataclasses.dataclass
class VolumeRecord:
    name: str
    driver: str
    options: dict[str, str]
    labels: dict[str, str]

    def attrs(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Driver": self.driver,
            "Options": dict(self.options) or None,
            "Labels": dict(self.labels) or None,
        }


class FakeContainer:
    """A snapshot of one container, like ``docker.models.containers.Container``."""

    def __init__(self, engine: FakeDocker, record: ContainerRecord) -> None:
        self._engine = engine
        self.id = record.id
        self.name = record.name
        self.attrs = record.attrs()

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.attrs["Config"]["Labels"])

    def reload(self) -> None:
        self.attrs = self._engine.record(self.id).attrs()

    def start(self) -> None:
        self._engine.start(self._engine.record(self.id))

    def stop(self, timeout: int | None = None) -> None:
        record = self._engine.record(self.id)
        if record.status == "running":
            self._engine.exit(record, 128 + signal.SIGTERM)

    def kill(self, signal: int | str | None = None) -> None:
        record = self._engine.record(self.id)
        if record.status != "running":
            raise _api_error(409, f"Container {record.id} is not running")
        self._engine.exit(record, 128 + int(signal or 9))

    def logs(self, stream: bool = False, follow: bool = False, **kwargs: Any) -> Any:
        record = self._engine.record(self.id)
        printed = self._engine.printed.get(record.command[0] if record.command else "", b"")
        return iter([printed]) if stream else printed

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        record = self._engine.record(self.id)
        if record.status != "exited":
            if timeout is not None:
                raise requests.exceptions.ReadTimeout("Read timed out.")
            raise AssertionError(f"waiting for {record.name}, which never stops, blocks forever")
        return {"StatusCode": record.exit_code, "Error": None}

    def remove(self, force: bool = False, v: bool = False) -> None:
        record = self._engine.record(self.id)
        if record.status == "running" and not force:
            raise _api_error(409, f"cannot remove container {record.name}: it is running")
        del self._engine.records[record.id]
        self._engine.removed.append(record)


class FakeNetwork:
    def __init__(self, engine: FakeDocker, record: NetworkRecord) -> None:
        self._engine = engine
        self.id = record.id
        self.name = record.name
        self.attrs = record.attrs(engine)

    def reload(self) -> None:
        self.attrs = self._engine.network(self.id).attrs(self._engine)

    def connect(self, container: FakeContainer | str, **options: Any) -> None:
        network = self._engine.network(self.id)
        key = container.id if isinstance(container, FakeContainer) else container
        record = self._engine.record(key)
        if network.name in record.networks:
            raise _api_error(
                403, f"endpoint with name {record.name} already exists in network {network.name}"
            )
        record.networks[network.name] = ""
        if record.status == "running":
            self._engine.assign_address(record, network.name)

    def remove(self) -> None:
        network = self._engine.network(self.id)
        if any(network.name in record.networks for record in self._engine.records.values()):
            raise _api_error(
                403, f"error while removing network: network {network.name} has active endpoints"
            )
        del self._engine.networks_by_id[network.id]


class FakeVolume:
    def __init__(self, engine: FakeDocker, record: VolumeRecord) -> None:
        self._engine = engine
        self.id = self.name = record.name
        self.attrs = record.attrs()

    def remove(self, force: bool = False) -> None:
        record = self._engine.volume(self.name)
        if self._engine.volume_users(record.name):
            raise _api_error(409, f"remove {record.name}: volume is in use")
        del self._engine.volumes_by_name[record.name]


class FakeContainers:
    def __init__(self, engine: FakeDocker) -> None:
        self._engine = engine

    def create(self, image: str, command: Any = None, **kwargs: Any) -> FakeContainer:
        request = _create_container_args(
            {**kwargs, "image": image, "command": command, "version": API_VERSION}
        )
        return FakeContainer(self._engine, self._engine.create(request))

    def get(self, container_id: str) -> FakeContainer:
        return FakeContainer(self._engine, self._engine.record(container_id))

    def list(
        self,
        all: bool = False,  # noqa: A002 - the SDK's own name for it
        filters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[FakeContainer]:
        return [
            FakeContainer(self._engine, record)
            for record in self._engine.records.values()
            if (all or record.status == "running") and _labels_match(record.labels, filters)
        ]


class FakeNetworks:
    def __init__(self, engine: FakeDocker) -> None:
        self._engine = engine

    def create(
        self,
        name: str,
        driver: str | None = None,
        options: Mapping[str, str] | None = None,
        ipam: Any = None,
        check_duplicate: bool | None = None,
        internal: bool = False,
        labels: Mapping[str, str] | None = None,
        enable_ipv6: bool = False,
        attachable: bool | None = None,
        scope: str | None = None,
        ingress: bool | None = None,
    ) -> FakeNetwork:
        return FakeNetwork(
            self._engine, self._engine.add_network(name, driver or "bridge", internal, labels)
        )

    def get(self, network_id: str) -> FakeNetwork:
        return FakeNetwork(self._engine, self._engine.network(network_id))

    def list(
        self, names: Iterable[str] | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[FakeNetwork]:
        return [
            FakeNetwork(self._engine, record)
            for record in self._engine.networks_by_id.values()
            if (names is None or record.name in names) and _labels_match(record.labels, filters)
        ]


class FakeVolumes:
    def __init__(self, engine: FakeDocker) -> None:
        self._engine = engine

    def create(
        self,
        name: str | None = None,
        driver: str | None = None,
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> FakeVolume:
        assert name, "sbx always names its volumes"
        record = self._engine.add_volume(name, driver or "local", driver_opts, labels)
        return FakeVolume(self._engine, record)

    def get(self, volume_id: str) -> FakeVolume:
        return FakeVolume(self._engine, self._engine.volume(volume_id))

    def list(self, filters: Mapping[str, Any] | None = None) -> list[FakeVolume]:
        return [
            FakeVolume(self._engine, record)
            for record in self._engine.volumes_by_name.values()
            if _labels_match(record.labels, filters)
        ]


def _api_error(status: int, message: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    if status == 404:
        return NotFound(message, response=response, explanation=message)
    return APIError(message, response=response, explanation=message)


class FakeDocker:
    """An in-memory Docker engine and client. ``programs`` says what a command does when
    started: exit at once with a status, or (absent) run until stopped or signalled.
    ``plugins`` names volume plugins and the options each accepts."""

    def __init__(
        self,
        images: Iterable[str] = (IMAGE,),
        networks: Iterable[str] = ("sbx-hub",),
        quota: bool = True,
        plugins: Mapping[str, set[str]] | None = None,
    ) -> None:
        self.images = set(images)
        self.quota = quota
        self.plugins = dict(plugins or {})
        self.programs: dict[str, int] = {"sh": 0, "true": 0, "false": 1}
        self.printed: dict[str, bytes] = {}  # what a program prints
        self.records: dict[str, ContainerRecord] = {}
        self.removed: list[ContainerRecord] = []
        self.networks_by_id: dict[str, NetworkRecord] = {}
        self.volumes_by_name: dict[str, VolumeRecord] = {}
        self._ids = itertools.count(1)
        self.containers = FakeContainers(self)
        self.networks = FakeNetworks(self)
        self.volumes = FakeVolumes(self)
        for name in networks:
            self.add_network(name, "bridge", internal=True, labels=None)

    # engine state

    def record(self, key: str) -> ContainerRecord:
        for record in self.records.values():
            if key in (record.id, record.name):
                return record
        raise _api_error(404, f"No such container: {key}")

    def network(self, key: str) -> NetworkRecord:
        for record in self.networks_by_id.values():
            if key in (record.id, record.name):
                return record
        raise _api_error(404, f"network {key} not found")

    def volume(self, name: str) -> VolumeRecord:
        if name not in self.volumes_by_name:
            raise _api_error(404, f"get {name}: no such volume")
        return self.volumes_by_name[name]

    def volume_users(self, name: str) -> list[ContainerRecord]:
        return [
            record
            for record in self.records.values()
            for mount in record.host_config.get("Mounts") or []
            if mount["Type"] == "volume" and mount["Source"] == name
        ]

    def add_network(
        self, name: str, driver: str, internal: bool, labels: Mapping[str, str] | None
    ) -> NetworkRecord:
        if any(record.name == name for record in self.networks_by_id.values()):
            raise _api_error(409, f"network with name {name} already exists")
        record = NetworkRecord(
            f"net{next(self._ids):060d}",
            name,
            driver,
            internal,
            dict(labels or {}),
            next(self._ids),
        )
        self.networks_by_id[record.id] = record
        return record

    def add_volume(
        self,
        name: str,
        driver: str,
        options: Mapping[str, str] | None,
        labels: Mapping[str, str] | None,
    ) -> VolumeRecord:
        options = dict(options or {})
        if name in self.volumes_by_name:
            existing = self.volumes_by_name[name]
            if existing.driver != driver:
                raise _api_error(409, f"volume {name} already exists with driver {existing.driver}")
            return existing  # the engine keeps the volume as it was made
        if driver == "local":
            accepted = LOCAL_VOLUME_OPTIONS
            if "size" in options and not self.quota:
                raise _api_error(400, f"create {name}: quota size requested but no quota support")
        elif driver in self.plugins:
            accepted = self.plugins[driver]
        else:
            raise _api_error(404, f"error looking up volume plugin {driver}: plugin not found")
        for option in options:
            if option not in accepted:
                raise _api_error(400, f"create {name}: invalid option: {option!r}")
        record = VolumeRecord(name, driver, options, dict(labels or {}))
        self.volumes_by_name[name] = record
        return record

    def create(self, request: dict[str, Any]) -> ContainerRecord:
        image, name = request["image"], request.get("name")
        if image not in self.images:
            raise ImageNotFound(
                f"No such image: {image}", response=None, explanation=f"No such image: {image}"
            )
        if name is None:
            name = f"container-{next(self._ids)}"
        if any(record.name == name for record in self.records.values()):
            raise _api_error(409, f'Conflict. The container name "/{name}" is already in use')
        host_config = request["host_config"]
        for mount in host_config.get("Mounts") or []:
            if mount["Type"] == "bind" and not Path(mount["Source"]).exists():
                raise _api_error(
                    400, f"invalid mount config for type bind: path {mount['Source']} missing"
                )
            if mount["Type"] == "volume" and mount["Source"] not in self.volumes_by_name:
                self.add_volume(mount["Source"], "local", None, None)  # what dockerd does
        mode = host_config.get("NetworkMode") or "default"
        if mode in ("default", "bridge"):
            networks = {"bridge": ""}
        elif mode == "none":
            networks = {}
        else:
            networks = {self.network(mode).name: ""}
        record = ContainerRecord(
            id=f"{next(self._ids):064x}",
            name=name,
            image=image,
            command=list(request.get("command") or []),
            request=request,
            networks=networks,
        )
        self.records[record.id] = record
        return record

    def start(self, record: ContainerRecord) -> None:
        if record.status == "running":
            return
        record.status = "running"
        for network in record.networks:
            self.assign_address(record, network)
        program = record.command[0] if record.command else ""
        if program in self.programs:
            self.exit(record, self.programs[program])

    def exit(self, record: ContainerRecord, code: int) -> None:
        record.status, record.exit_code = "exited", code
        record.networks = dict.fromkeys(record.networks, "")

    def assign_address(self, record: ContainerRecord, network: str) -> None:
        subnet = 0 if network == "bridge" else self.network(network).subnet
        taken = sum(1 for other in self.records.values() if other.networks.get(network))
        record.networks[network] = f"172.{16 + subnet % 16}.{subnet // 16}.{taken + 2}"

    # what tests look at

    def sandbox_containers(self, name: str) -> list[ContainerRecord]:
        return [r for r in self.records.values() if r.labels.get("sbx.sandbox") == name]
