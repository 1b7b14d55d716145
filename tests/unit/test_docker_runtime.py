"""The Docker runtime, against an in-memory twin of the part of the Docker engine it uses
(:mod:`tests.docker_twin`)."""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import stat
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import APIError

from sandbox.runtime.bwrap import Profile, sandbox_env
from sandbox.runtime.docker import (
    DockerProcess,
    DockerRuntime,
    network_name,
    run_volume,
    setup_command,
    workspace_volume,
)
from sandbox.runtime.spec import DATA, HOME, MIB, RUN, Limits, SandboxError, SandboxSpec
from tests.docker_twin import API_VERSION, IMAGE, ContainerRecord, FakeDocker

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
    **options: Any,
) -> tuple[DockerProcess, ContainerRecord]:
    process = runtime.launch(spec, argv, profile=profile, env=env, **options)
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
    assert setup.command == setup_command(spec)
    assert setup.command[4:] == ["20001:30007", HOME, RUN, "30007", DATA]
    assert setup.request["user"] == "0:0"
    host = setup.host_config
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["CHOWN", "FOWNER"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges"]
    targets = {mount["Target"]: mount for mount in host["Mounts"]}
    assert {k: m["Source"] for k, m in targets.items()} == {
        DATA: str(spec.views),
        HOME: workspace_volume(spec),
        RUN: run_volume(spec),
    }
    # Only this step, which runs no applicant code, sees the views writable.
    assert targets[DATA]["ReadOnly"] is False


def test_the_setup_step_shares_the_views_with_the_grants_group_only(
    spec: SandboxSpec, tmp_path: Path
) -> None:
    """The setup command, run by a shell on a copy of its folders (as the engine runs it
    on the volumes and the bind)."""
    views, home, run = tmp_path / "v", tmp_path / "h", tmp_path / "r"
    for folder in (views / "table", home, run):
        folder.mkdir(parents=True)
    (views / "table" / "part-0.parquet").write_bytes(b"rows")
    os.chmod(views / "table" / "part-0.parquet", 0o606)  # noqa: S103 - others lose it
    os.chmod(views / "table", 0o707)  # noqa: S103
    command = setup_command(spec)
    paths = {HOME: str(home), RUN: str(run), DATA: str(views)}
    subprocess.run([paths.get(arg, arg) for arg in command], check=True)  # noqa: S603
    assert (home.stat().st_uid, home.stat().st_gid) == (20001, 30007)
    assert (run.stat().st_uid, run.stat().st_gid) == (20001, 30007)
    for path, mode in ((views / "table", 0o750), (views / "table" / "part-0.parquet", 0o640)):
        info = path.stat()
        assert info.st_gid == 30007
        assert info.st_uid == os.getuid()  # the owner keeps them
        assert stat.S_IMODE(info.st_mode) == mode


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
    engine.programs["sh"] = 1
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
    assert set(mounts) == {DATA, HOME}  # a batch command sees no sockets at all
    assert mounts[DATA]["Type"] == "bind"
    assert mounts[DATA]["Source"] == str(spec.views)
    assert mounts[DATA]["ReadOnly"] is True
    assert mounts[HOME]["Type"] == "volume"
    assert mounts[HOME]["Source"] == workspace_volume(spec)
    assert mounts[HOME]["ReadOnly"] is False
    assert record.request["working_dir"] == HOME
    assert record.labels == {"sbx.sandbox": spec.name, "sbx.profile": "kernel"}
    assert record.name.startswith(f"sbx-{spec.name}-kernel-")
    assert record.status == "running"
    with pytest.raises(SandboxError, match="no network"):
        process.address()


def test_a_jupyter_kernel_sees_only_its_own_folder_of_the_sockets(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    _, record = launch(runtime, engine, spec, ["python"], kernel="k-1", workdir=f"{HOME}/project")
    mounts = {mount["Target"]: mount for mount in record.host_config["Mounts"]}
    assert mounts[RUN]["Source"] == run_volume(spec)
    assert mounts[RUN]["VolumeOptions"]["Subpath"] == "kernels/k-1"
    assert record.labels["sbx.kernel"] == "k-1"
    assert record.request["working_dir"] == f"{HOME}/project"
    assert set(runtime.kernels(spec)) == {"k-1"}
    _, server = launch(runtime, engine, spec, ["jupyterhub-singleuser"], Profile.SERVER)
    server_mounts = {mount["Target"]: mount for mount in server.host_config["Mounts"]}
    assert "VolumeOptions" not in server_mounts[RUN] or not server_mounts[RUN]["VolumeOptions"].get(
        "Subpath"
    )
    assert set(runtime.kernels(spec)) == {"k-1"}  # the server is not a kernel


@pytest.mark.parametrize(
    ("kernel", "workdir", "why"),
    [
        ("../server", HOME, "not a plain name"),
        ("k/1", HOME, "not a plain name"),
        ("k-1", "/etc", "not in the workspace"),
        ("k-1", f"{HOME}/../../etc", "climbs out"),
    ],
)
def test_a_kernel_container_names_a_plain_kernel_in_the_workspace(
    runtime: DockerRuntime,
    engine: FakeDocker,
    spec: SandboxSpec,
    kernel: str,
    workdir: str,
    why: str,
) -> None:
    runtime.prepare(spec)
    with pytest.raises(SandboxError, match=why):
        runtime.launch(spec, ["python"], kernel=kernel, workdir=workdir)
    assert runtime.kernels(spec) == {}


def test_removing_a_kernel_container_leaves_the_others(
    runtime: DockerRuntime, engine: FakeDocker, spec: SandboxSpec
) -> None:
    runtime.prepare(spec)
    launch(runtime, engine, spec, ["python"], kernel="a")
    launch(runtime, engine, spec, ["python"], kernel="b")
    kernels = runtime.kernels(spec)
    runtime.remove(kernels["a"])
    runtime.remove(kernels["a"])  # again: nothing happens
    assert kernels["a"].poll() is not None
    assert set(runtime.kernels(spec)) == {"b"}


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
