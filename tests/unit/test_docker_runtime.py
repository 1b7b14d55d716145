"""The Docker runtime, against an in-memory twin of the part of the Docker engine it uses.

The twin turns ``containers.create`` arguments into the request the real SDK would send
(``docker.models.containers._create_container_args``, so misspelt or unsupported options
fail here as they would there) and keeps the engine's rules that matter to sbx: names are
unique, ``containers.list`` shows only running containers unless ``all=True``, objects
are snapshots until ``reload()``, a volume in use or a network with members cannot be
removed, a missing volume named in a mount is created on the fly, the ``local`` volume
driver refuses a ``size`` without XFS project quotas, a bind source must exist.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import signal
import subprocess
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import _create_container_args

from sandbox.runtime.bwrap import Profile, sandbox_env
from sandbox.runtime.docker import (
    DockerProcess,
    DockerRuntime,
    network_name,
    run_volume,
    workspace_volume,
)
from sandbox.runtime.spec import DATA, HOME, MIB, RUN, Limits, SandboxError, SandboxSpec

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
        self.programs: dict[str, int] = {"chown": 0, "true": 0, "false": 1}
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


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def spec(tmp_path: Path) -> SandboxSpec:
    views = tmp_path / "views"
    views.mkdir()
    return SandboxSpec(
        name="alice-grant-7",
        uid=20001,
        gid=30007,
        views=views,
        state=tmp_path / "state",
        stage=tmp_path / "stage",
        python=tmp_path / "python",
        limits=Limits(
            memory_bytes=512 * MIB, pids=64, disk_bytes=100 * MIB, tmp_bytes=32 * MIB, cpus=1.5
        ),
        env={"SBX_GRANT": "7"},
    )


@pytest.fixture
def engine() -> FakeDocker:
    return FakeDocker()


@pytest.fixture
def runtime(engine: FakeDocker) -> DockerRuntime:
    return DockerRuntime(client=engine)


def launch(
    runtime: DockerRuntime,
    engine: FakeDocker,
    spec: SandboxSpec,
    argv: list[str],
    profile: Profile = Profile.KERNEL,
    env: Mapping[str, str] | None = None,
) -> tuple[DockerProcess, ContainerRecord]:
    process = runtime.launch(spec, argv, profile=profile, env=env)
    return process, engine.record(process.container_id)


# ---------------------------------------------------------------------------------------
# prepare


def test_prepare_makes_an_internal_network_and_a_sized_workspace(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    assert runtime.prepare(spec) == {"cgroups": True, "disk": True}
    network = engine.network(f"sbx-{spec.name}")
    assert network.internal
    assert network.labels == {"sbx.sandbox": spec.name}
    workspace = engine.volume(f"sbx-ws-{spec.name}")
    assert workspace.driver == "local"
    assert workspace.options == {"size": str(100 * MIB)}
    assert workspace.labels == {"sbx.sandbox": spec.name}
    assert engine.volume(run_volume(spec)).labels == {"sbx.sandbox": spec.name}


def test_prepare_gives_the_volumes_to_the_sandbox_uid_and_leaves_nothing_running(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    assert engine.records == {}
    (setup,) = engine.removed
    assert setup.command == ["chown", "20001:30007", HOME, RUN]
    host = setup.host_config
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["CHOWN"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges"]
    targets = {mount["Target"]: mount["Source"] for mount in host["Mounts"]}
    assert targets == {HOME: workspace_volume(spec), RUN: run_volume(spec)}
    assert DATA not in targets  # root never touches the views


def test_prepare_is_idempotent(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    first = runtime.prepare(spec)
    second = runtime.prepare(spec)
    assert first == second
    assert [n.name for n in engine.networks_by_id.values()].count(network_name(spec)) == 1
    assert sorted(engine.volumes_by_name) == [run_volume(spec), workspace_volume(spec)]


def test_prepare_fails_when_the_volumes_cannot_be_given_to_the_uid(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    engine.programs["chown"] = 1
    with pytest.raises(SandboxError, match="could not give the volumes of alice-grant-7"):
        runtime.prepare(spec)
    assert engine.records == {}


def test_a_local_volume_without_quota_support_is_refused_with_the_way_out(
    spec: SandboxSpec,
) -> None:
    runtime = DockerRuntime(client=FakeDocker(quota=False))
    with pytest.raises(SandboxError, match="pquota") as raised:
        runtime.prepare(spec)
    assert "quota size requested but no quota support" in str(raised.value)
    assert "size_option=None" in str(raised.value)


def test_without_a_size_option_the_workspace_has_no_limit_and_prepare_says_so(
    spec: SandboxSpec,
) -> None:
    engine = FakeDocker(quota=False)
    runtime = DockerRuntime(client=engine, size_option=None)
    assert runtime.prepare(spec) == {"cgroups": True, "disk": False}
    assert engine.volume(workspace_volume(spec)).options == {}


def test_a_volume_plugin_gets_its_options_and_the_size(spec: SandboxSpec) -> None:
    engine = FakeDocker(plugins={"xfsvol": {"size", "root"}})
    runtime = DockerRuntime(
        client=engine, volume_driver="xfsvol", volume_options={"root": "/mnt/xfs/volumes"}
    )
    assert runtime.prepare(spec)["disk"] is True
    workspace = engine.volume(workspace_volume(spec))
    assert workspace.driver == "xfsvol"
    assert workspace.options == {"root": "/mnt/xfs/volumes", "size": str(100 * MIB)}
    assert engine.volume(run_volume(spec)).driver == "local"


def test_an_existing_unlimited_workspace_is_reported_as_such(
    engine: FakeDocker, spec: SandboxSpec
) -> None:
    engine.add_volume(workspace_volume(spec), "local", None, {"sbx.sandbox": spec.name})
    assert DockerRuntime(client=engine).prepare(spec)["disk"] is False


@pytest.mark.parametrize("kind", ["network", "volume"])
def test_prepare_refuses_a_same_named_object_it_did_not_make(
    engine: FakeDocker, spec: SandboxSpec, kind: str
) -> None:
    if kind == "network":
        engine.add_network(network_name(spec), "bridge", internal=True, labels=None)
    else:
        engine.add_volume(workspace_volume(spec), "local", None, None)
    with pytest.raises(SandboxError, match=f"{kind} .* does not belong to sandbox"):
        DockerRuntime(client=engine).prepare(spec)


def test_prepare_refuses_a_network_with_a_way_out(engine: FakeDocker, spec: SandboxSpec) -> None:
    engine.add_network(
        network_name(spec), "bridge", internal=False, labels={"sbx.sandbox": spec.name}
    )
    with pytest.raises(SandboxError, match="not internal"):
        DockerRuntime(client=engine).prepare(spec)


def test_prepare_needs_the_views(runtime: DockerRuntime, spec: SandboxSpec) -> None:
    spec.views.rmdir()
    with pytest.raises(SandboxError, match="views folder .* does not exist"):
        runtime.prepare(spec)


# ---------------------------------------------------------------------------------------
# launch


def test_a_kernel_is_isolated(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    process, record = launch(runtime, engine, spec, ["python", "-m", "ipykernel_launcher"])
    host = record.host_config
    assert record.request["user"] == "20001:30007"
    assert not record.request["user"].startswith("0")
    assert host["CapDrop"] == ["ALL"]
    assert "CapAdd" not in host
    assert host.get("Privileged", False) is False
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is True
    assert host["Tmpfs"] == {"/tmp": f"size={32 * MIB},noexec,nosuid,nodev"}
    assert host["Memory"] == host["MemorySwap"] == 512 * MIB
    assert host["PidsLimit"] == 64
    assert host["NanoCpus"] == 1_500_000_000
    assert host["OomScoreAdj"] == 1000
    assert host["NetworkMode"] == "none"
    assert record.networks == {}
    assert host["LogConfig"]["Config"]["max-size"]
    mounts = {mount["Target"]: mount for mount in host["Mounts"]}
    assert set(mounts) == {DATA, HOME, RUN}
    assert mounts[DATA]["Type"] == "bind"
    assert mounts[DATA]["Source"] == str(spec.views)
    assert mounts[DATA]["ReadOnly"] is True
    assert mounts[HOME]["Type"] == "volume"
    assert mounts[HOME]["Source"] == workspace_volume(spec)
    assert mounts[HOME]["ReadOnly"] is False
    assert mounts[RUN]["Source"] == run_volume(spec)
    assert record.request["working_dir"] == HOME
    assert record.labels == {"sbx.sandbox": spec.name, "sbx.profile": "kernel"}
    assert record.name.startswith(f"sbx-{spec.name}-kernel-")
    assert record.status == "running"
    with pytest.raises(SandboxError, match="no network"):
        process.address()


def test_the_environment_is_made_afresh(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SBX_HOST_SECRET", "must not leak")
    runtime.prepare(spec)
    _, record = launch(runtime, engine, spec, ["sleep", "1"], env={"JPY_SESSION": "abc"})
    env = record.request["environment"]
    expected = sandbox_env(dataclasses.replace(spec, python=Path("/opt/sbx-sandbox")))
    assert env == {**expected, "JPY_SESSION": "abc"}
    assert "SBX_HOST_SECRET" not in env
    assert env["SBX_GRANT"] == "7"
    assert env["PATH"].startswith("/opt/sbx-sandbox/bin:")
    assert env["HOME"] == HOME


def test_a_server_is_on_its_own_internal_network_and_the_hubs(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    process, record = launch(runtime, engine, spec, ["jupyterhub-singleuser"], Profile.SERVER)
    host = record.host_config
    assert host["NetworkMode"] == network_name(spec)
    assert set(record.networks) == {network_name(spec), "sbx-hub"}
    assert "bridge" not in record.networks
    assert engine.network(network_name(spec)).internal
    assert host["OomScoreAdj"] == -500
    assert host["CapDrop"] == ["ALL"]
    assert record.labels["sbx.profile"] == "server"
    assert process.address() == record.networks["sbx-hub"]
    assert process.address(network_name(spec)) == record.networks[network_name(spec)]
    assert process.address() != process.address(network_name(spec))


def test_sandboxes_do_not_share_a_network(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    other = dataclasses.replace(spec, name="bob-grant-7", uid=20002)
    for each in (spec, other):
        runtime.prepare(each)
        launch(runtime, engine, each, ["jupyterhub-singleuser"], Profile.SERVER)
    first, second = (engine.sandbox_containers(s.name)[0] for s in (spec, other))
    assert set(first.networks) & set(second.networks) == {"sbx-hub"}


def test_a_server_needs_the_hubs_network_and_leaves_nothing_behind(spec: SandboxSpec) -> None:
    engine = FakeDocker(networks=())
    runtime = DockerRuntime(client=engine)
    runtime.prepare(spec)
    with pytest.raises(SandboxError, match="hub's network sbx-hub does not exist"):
        runtime.launch(spec, ["jupyterhub-singleuser"], profile=Profile.SERVER)
    assert engine.records == {}


def test_launch_needs_a_prepared_sandbox(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    with pytest.raises(SandboxError, match="not prepared"):
        runtime.launch(spec, ["sleep", "1"])
    assert engine.records == {}
    assert engine.volumes_by_name == {}  # dockerd would have made an unlimited one


def test_launch_needs_a_command(runtime: DockerRuntime, spec: SandboxSpec) -> None:
    runtime.prepare(spec)
    with pytest.raises(SandboxError, match="no command"):
        runtime.launch(spec, [])


def test_each_process_gets_a_container_of_its_own(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    first = runtime.launch(spec, ["sleep", "1"])
    second = runtime.launch(spec, ["sleep", "1"])
    assert first.container_id != second.container_id
    assert len(engine.sandbox_containers(spec.name)) == 2


# ---------------------------------------------------------------------------------------
# processes


def test_a_process_is_polled_signalled_and_waited_for(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    process = runtime.launch(spec, ["sleep", "infinity"])
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    process.terminate()
    assert process.wait(timeout=5) == 128 + signal.SIGTERM
    assert process.poll() == 128 + signal.SIGTERM
    process.kill()  # like Popen: nothing happens once it has stopped
    process.send_signal(signal.SIGINT)
    assert process.returncode == 128 + signal.SIGTERM


def test_kill_sends_sigkill(runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec) -> None:
    runtime.prepare(spec)
    process = runtime.launch(spec, ["sleep", "infinity"])
    process.kill()
    assert process.wait() == 128 + signal.SIGKILL


def test_the_exit_status_is_the_commands(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    assert runtime.launch(spec, ["false"]).wait() == 1
    assert runtime.launch(spec, ["true"]).poll() == 0


# ---------------------------------------------------------------------------------------
# release


def test_release_removes_containers_and_network_and_keeps_the_workspace(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    launch(runtime, engine, spec, ["jupyterhub-singleuser"], Profile.SERVER)
    launch(runtime, engine, spec, ["sleep", "infinity"])
    launch(runtime, engine, spec, ["false"])  # exited: only listed with all=True
    runtime.release(spec)
    assert engine.sandbox_containers(spec.name) == []
    assert network_name(spec) not in {n.name for n in engine.networks_by_id.values()}
    assert run_volume(spec) not in engine.volumes_by_name
    assert workspace_volume(spec) in engine.volumes_by_name
    runtime.release(spec)  # idempotent
    assert runtime.prepare(spec) == {"cgroups": True, "disk": True}
    assert "sbx-hub" in {n.name for n in engine.networks_by_id.values()}


def test_release_touches_no_other_sandbox(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    other = dataclasses.replace(spec, name="alice-grant-70")  # a name with spec's as prefix
    for each in (spec, other):
        runtime.prepare(each)
        launch(runtime, engine, each, ["sleep", "infinity"])
    runtime.release(spec)
    (left,) = engine.sandbox_containers(other.name)
    assert left.status == "running"
    assert engine.network(network_name(other)).name == network_name(other)


def test_remove_workspace_deletes_it_idempotently(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    launch(runtime, engine, spec, ["sleep", "infinity"])
    runtime.remove_workspace(spec)
    assert engine.volumes_by_name == {}
    assert engine.records == {}
    runtime.remove_workspace(spec)


# ---------------------------------------------------------------------------------------
# errors


def test_a_missing_image_says_how_to_build_it(spec: SandboxSpec) -> None:
    runtime = DockerRuntime(client=FakeDocker(images=()), image="sbx-sandbox:9")
    with pytest.raises(SandboxError, match=r"image sbx-sandbox:9 is missing") as raised:
        runtime.prepare(spec)
    assert "docker build -f deploy/sandbox.Dockerfile -t sbx-sandbox:9" in str(raised.value)


def test_an_engine_refusal_is_explained(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    process = runtime.launch(spec, ["sleep", "infinity"])
    engine.record(process.container_id).status = "paused"
    with pytest.raises(SandboxError, match="refused to signal a sandbox container: .*not running"):
        process.terminate()


def unreachable_message(runtime: DockerRuntime, spec: SandboxSpec) -> str:
    """What prepare says without an engine. The SDK leaves the socket of a failed connection
    to the garbage collector, so its ResourceWarning is collected here, not at exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            runtime.prepare(spec)
        except SandboxError as error:
            message = str(error)
        else:
            raise AssertionError("prepare succeeded without an engine")
        gc.collect()
    return message


def test_an_unreachable_engine_is_explained(spec: SandboxSpec) -> None:
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version=API_VERSION)
    try:
        message = unreachable_message(DockerRuntime(client=client), spec)
    finally:
        client.close()
    assert message.startswith("the Docker engine is unreachable, so sbx cannot prepare")
    assert "DOCKER_HOST" in message


def test_the_default_client_is_made_on_first_use(
    spec: SandboxSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    runtime = DockerRuntime()  # no engine needed yet
    message = unreachable_message(runtime, spec)
    assert message.startswith("the Docker engine is unreachable, so sbx cannot connect to it")


# ---------------------------------------------------------------------------------------
# the twin keeps the engine's rules


def test_the_twin_refuses_what_the_engine_refuses(engine: FakeDocker, tmp_path: Path) -> None:
    with pytest.raises(APIError, match="already exists"):
        engine.networks.create("sbx-hub", internal=True)
    with pytest.raises(TypeError):
        engine.containers.create(IMAGE, ["true"], read_only_root=True)  # not an SDK option
    engine.volumes.create(name="ws")
    container = engine.containers.create(
        IMAGE, ["sleep", "1"], name="one", mounts=[docker.types.Mount("/w", "ws")]
    )
    with pytest.raises(APIError, match="already in use"):
        engine.containers.create(IMAGE, ["sleep", "1"], name="one")
    with pytest.raises(APIError, match="volume is in use"):
        engine.volumes.get("ws").remove()
    container.start()
    assert container.status == "created"  # a snapshot until reload
    container.reload()
    assert container.status == "running"
    assert engine.containers.list() and not engine.containers.list(filters={"label": "x=y"})
    hub = engine.networks.get("sbx-hub")
    hub.connect(container)
    with pytest.raises(APIError, match="already exists in network"):
        hub.connect(container)
    with pytest.raises(APIError, match="active endpoints"):
        hub.remove()
    with pytest.raises(APIError, match="running"):
        container.remove()
    container.stop()
    assert engine.containers.list() == []
    assert len(engine.containers.list(all=True)) == 1
    with pytest.raises(APIError, match="bind"):
        engine.containers.create(
            IMAGE, ["true"], mounts=[docker.types.Mount("/d", str(tmp_path / "no"), type="bind")]
        )
