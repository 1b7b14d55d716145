"""The production runtime: sandboxes as Docker containers, through the Docker API.

Every process a sandbox runs — the trusted Jupyter server, each kernel, ``sbx sandbox
run`` — is a container of its own made from the sandbox image, labelled
``sbx.sandbox=<name>`` and ``sbx.profile=<profile>``, and started with:

- the applicant's uid and the grant's gid (never root), every capability dropped,
  ``no-new-privileges``, Docker's default seccomp and AppArmor profiles, an init process;
- a read-only root, a private ``/tmp`` (tmpfs of ``tmp_bytes``, ``noexec,nosuid,nodev``);
- ``memory_bytes`` of memory and no swap on top (``memswap_limit == mem_limit``),
  ``pids`` processes, ``cpus`` CPUs; the kernel is the first the OOM killer picks, the
  server the last;
- the grant's views bind-mounted read-only at ``/data``, the workspace volume at
  ``/home/jovyan`` (the working directory); the server gets the sockets volume at
  ``/run/sbx``, a kernel only its own folder of it (``kernels/<id>``, a volume subpath:
  Docker Engine 26 or later), and a batch command none of it;
- an environment made by :func:`sandbox.runtime.bwrap.sandbox_env`, nothing from the host.

Networks. A kernel (applicant code) has no network at all (``network_mode="none"``). A
server joins the sandbox's own network ``sbx-<name>`` (``internal``: no route out; one per
sandbox) and the hub's network, so the hub and its proxy reach it and it reaches the hub's
API. No sandbox container is ever on Docker's default bridge. The hub's network should
itself be ``internal`` (``deploy/compose.yaml``), leaving servers no way out either.

Views. The engine binds the grant's views folder by its host path (so the hub sees the
data directory at the host's path). The containers run as the applicant's uid and the
grant's gid, so :meth:`DockerRuntime.prepare` lets the grant's group read the views
(``g+rX``, nothing for others, the owner unchanged) as the bubblewrap runtime does.

Volumes. The workspace ``sbx-ws-<name>`` survives :meth:`DockerRuntime.release` (and
restarts); :meth:`DockerRuntime.remove_workspace` deletes it when the grant ends. The
sockets volume ``sbx-run-<name>`` lives as long as the sandbox runs. :meth:`prepare` gives
both to the sandbox's uid, and the views to the grant's group, with a one-off ``setup``
container (root with ``CAP_CHOWN`` and ``CAP_FOWNER`` only, no network, a fixed command)
because a new volume belongs to root and the views to the platform.

Workspace size. Docker's per-container ``storage_opt size`` only works on some storage
drivers and covers the container's writable layer, not its volumes, so the size goes to
the volume driver instead: the runtime passes ``disk_bytes`` as the driver option named
``size_option``. With the default ``local`` driver that is its ``size`` option, which the
engine applies as an XFS project quota and refuses unless ``/var/lib/docker/volumes`` is
on XFS mounted with ``pquota``; a volume plugin with a size option (e.g. ``xfsvol``, or a
storage vendor's) is the other production answer. A size-limited tmpfs is not one: the
workspace must persist. ``size_option=None`` runs without a workspace limit, and
:meth:`DockerRuntime.prepare` then says so (``disk: False``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount

from sandbox.runtime.bwrap import KERNEL_OOM_SCORE, SERVER_OOM_SCORE, Profile, sandbox_env
from sandbox.runtime.spec import DATA, HOME, KERNEL_ID, RUN, SandboxError, SandboxSpec

SANDBOX_LABEL = "sbx.sandbox"
PROFILE_LABEL = "sbx.profile"
KERNEL_LABEL = "sbx.kernel"  # the Jupyter kernel id a kernel container runs
KERNELS = "kernels"  # the folder of the sockets volume that holds one folder per kernel
SETUP = "setup"  # the profile label of the one-off container that owns the volumes
SETUP_SECONDS = 120
STOP_SECONDS = 10
EXITED = frozenset({"exited", "dead"})
LOGS = {"max-size": "10m", "max-file": "2"}  # what a container may print is bounded too


def network_name(spec: SandboxSpec) -> str:
    return f"sbx-{spec.name}"


def workspace_volume(spec: SandboxSpec) -> str:
    return f"sbx-ws-{spec.name}"


def run_volume(spec: SandboxSpec) -> str:
    return f"sbx-run-{spec.name}"


# The setup step's one command: the volumes to the sandbox's uid, the views readable by
# the grant's group and nobody else (the owner keeps them; nothing becomes writable).
SETUP_SCRIPT = 'chown "$1" "$2" "$3" && chgrp -R "$4" "$5" && chmod -R g+rX,g-w,o-rwx "$5"'


def setup_command(spec: SandboxSpec) -> list[str]:
    owner = f"{spec.uid}:{spec.gid}"
    return ["sh", "-c", SETUP_SCRIPT, "setup", owner, HOME, RUN, str(spec.gid), DATA]


def explain(error: APIError) -> str:
    return str(error.explanation or error)


@contextlib.contextmanager
def engine_errors(action: str, image: str) -> Iterator[None]:
    """Turn what the Docker SDK raises into a :class:`SandboxError` that says why."""
    try:
        yield
    except ImageNotFound as error:
        raise SandboxError(
            f"the sandbox image {image} is missing ({explain(error)}): build it with "
            f"`docker build -f deploy/sandbox.Dockerfile -t {image} .`"
        ) from error
    except APIError as error:
        raise SandboxError(f"the Docker engine refused to {action}: {explain(error)}") from error
    except (DockerException, requests.exceptions.ConnectionError) as error:
        raise SandboxError(
            f"the Docker engine is unreachable, so sbx cannot {action} ({error}): is it "
            "running, and does DOCKER_HOST (or /var/run/docker.sock) lead to it?"
        ) from error


class DockerProcess:
    """One sandboxed process (a container), with the parts of :class:`subprocess.Popen`
    that callers use: :meth:`poll`, :meth:`wait`, :meth:`send_signal`, :meth:`terminate`,
    :meth:`kill`; ``container_id`` stands where ``pid`` would."""

    def __init__(
        self,
        container: Any,
        args: Sequence[str],
        profile: Profile,
        networks: Sequence[str],
        image: str,
    ) -> None:
        self.container = container
        self.container_id: str = container.id
        self.args = list(args)
        self.profile = profile
        self.networks = list(networks)  # the hub's network first, when there is one
        self.returncode: int | None = None
        self._image = image

    def poll(self) -> int | None:
        """The exit status if the container has stopped, else None."""
        if self.returncode is None:
            with engine_errors("inspect a sandbox container", self._image):
                self.container.reload()
            if self.container.status in EXITED:
                self.returncode = int(self.container.attrs["State"]["ExitCode"])
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to stop; :class:`subprocess.TimeoutExpired` after
        ``timeout`` seconds, like Popen."""
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            with engine_errors("wait for a sandbox container", self._image):
                status = self.container.wait()
            self.returncode = int(status["StatusCode"])
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.05
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)
        return code

    def send_signal(self, sig: int) -> None:
        """Signal the container's main process; nothing once it has stopped (like Popen)."""
        if self.poll() is not None:
            return
        try:
            with engine_errors("signal a sandbox container", self._image):
                self.container.kill(signal=int(sig))
        except SandboxError:
            if self.poll() is None:  # it did not just stop on its own
                raise

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def copy_output(self, out: BinaryIO) -> None:
        """Copy what the container prints (its output and errors, as they come) to
        ``out`` until it stops: what a batch command's caller sees."""
        with engine_errors("read a sandbox container's output", self._image):
            for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                out.write(chunk)
                out.flush()

    def address(self, network: str | None = None) -> str:
        """The container's IP address on ``network``: by default the hub's network, where
        the hub and its proxy reach a server. Kernels have none."""
        if not self.networks:
            raise SandboxError("a sandbox kernel has no network, hence no address")
        name = network or self.networks[0]
        with engine_errors("inspect a sandbox container", self._image):
            self.container.reload()
        endpoint = self.container.attrs["NetworkSettings"]["Networks"].get(name)
        if not endpoint or not endpoint.get("IPAddress"):
            raise SandboxError(f"container {self.container.name} has no address on {name}")
        return str(endpoint["IPAddress"])


class DockerRuntime:
    """Makes, enters and removes sandboxes as containers of ``image``.

    ``client`` is a ``docker.DockerClient`` (made with ``docker.from_env()`` on first use
    when None). ``volume_driver`` and ``volume_options`` make the workspace volume;
    ``size_option`` names the driver option that carries its size in bytes (None: the
    driver has none). ``python`` is where the image keeps the sandbox's Python environment.
    """

    name = "docker"

    def __init__(
        self,
        client: Any = None,
        image: str = "sbx-sandbox:latest",
        hub_network: str = "sbx-hub",
        *,
        volume_driver: str = "local",
        volume_options: Mapping[str, str] | None = None,
        size_option: str | None = "size",
        python: Path | str = "/opt/sbx-sandbox",
    ) -> None:
        self._client = client
        self.image = image
        self.hub_network = hub_network
        self.volume_driver = volume_driver
        self.volume_options = dict(volume_options or {})
        self.size_option = size_option
        self.python = Path(python)

    @property
    def client(self) -> Any:
        if self._client is None:
            with engine_errors("connect to it", self.image):
                self._client = docker.from_env()
        return self._client

    def prepare(self, spec: SandboxSpec) -> dict[str, bool]:
        """Make the sandbox's network and volumes (idempotent) and give the volumes to its
        uid. Returns which limits hold: ``cgroups`` (memory, processes and CPUs, per
        container) and ``disk`` (the workspace volume has a size)."""
        if not spec.views.is_dir():
            raise SandboxError(f"the views folder {spec.views} does not exist")
        with engine_errors(f"prepare sandbox {spec.name}", self.image):
            self._ensure_network(spec)
            options = dict(self.volume_options)
            if self.size_option is not None:
                options[self.size_option] = str(spec.limits.disk_bytes)
            workspace = self._ensure_volume(
                spec, workspace_volume(spec), self.volume_driver, options
            )
            self._ensure_volume(spec, run_volume(spec), "local", {})
            self._own_volumes(spec)
        sized = self.size_option is not None and self.size_option in (
            workspace.attrs.get("Options") or {}
        )
        return {"cgroups": True, "disk": sized}

    def container_config(
        self,
        spec: SandboxSpec,
        argv: Sequence[str],
        *,
        profile: Profile = Profile.KERNEL,
        env: Mapping[str, str] | None = None,
        kernel: str | None = None,
        workdir: str = HOME,
    ) -> dict[str, Any]:
        """Everything the engine is told about one sandboxed process, as the keyword
        arguments of ``containers.create`` (the networks beyond the first are joined
        after creation). ``kernel`` names the Jupyter kernel a kernel container runs: it
        sees only that kernel's folder of the sockets volume."""
        if not argv:
            raise SandboxError("no command to run in the sandbox")
        if kernel is not None and (profile is not Profile.KERNEL or not KERNEL_ID.match(kernel)):
            raise SandboxError(f"kernel id {kernel!r} is not a plain name of a kernel container")
        if workdir != HOME and not PurePosixPath(workdir).is_relative_to(HOME):
            raise SandboxError(f"the working directory {workdir!r} is not in the workspace")
        if ".." in PurePosixPath(workdir).parts:
            raise SandboxError(f"the working directory {workdir!r} climbs out of the workspace")
        limits = spec.limits
        labels = {SANDBOX_LABEL: spec.name, PROFILE_LABEL: str(profile)}
        if kernel is not None:
            labels[KERNEL_LABEL] = kernel
        config: dict[str, Any] = {
            "image": self.image,
            "command": list(argv),
            "name": f"sbx-{spec.name}-{profile}-{secrets.token_hex(3)}",
            "hostname": "sandbox",
            "user": f"{spec.uid}:{spec.gid}",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "init": True,
            "ipc_mode": "private",
            "tmpfs": {"/tmp": f"size={limits.tmp_bytes},noexec,nosuid,nodev"},  # noqa: S108
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,
            "pids_limit": limits.pids,
            "nano_cpus": int(limits.cpus * 1e9),
            "oom_score_adj": KERNEL_OOM_SCORE if profile is Profile.KERNEL else SERVER_OOM_SCORE,
            "mounts": self._mounts(spec, profile, kernel),
            "working_dir": workdir,
            "environment": sandbox_env(dataclasses.replace(spec, python=self.python), env),
            "labels": labels,
            "log_config": LogConfig(type=LogConfig.types.JSON, config=LOGS),
        }
        if profile is Profile.KERNEL:
            config["network_mode"] = "none"
        else:
            config["network"] = network_name(spec)
        return config

    def launch(
        self,
        spec: SandboxSpec,
        argv: Sequence[str],
        *,
        profile: Profile = Profile.KERNEL,
        env: Mapping[str, str] | None = None,
        kernel: str | None = None,
        workdir: str = HOME,
    ) -> DockerProcess:
        """Start ``argv`` in a new container of a sandbox prepared by :meth:`prepare`."""
        config = self.container_config(
            spec, argv, profile=profile, env=env, kernel=kernel, workdir=workdir
        )
        networks: list[str] = []
        hub: Any = None
        with engine_errors(f"start a {profile} in sandbox {spec.name}", self.image):
            for volume in (workspace_volume(spec), run_volume(spec)):
                if self._get(self.client.volumes, volume) is None:
                    raise SandboxError(f"sandbox {spec.name} is not prepared: {volume} is missing")
            if profile is Profile.SERVER:
                hub = self._get(self.client.networks, self.hub_network)
                if hub is None:
                    raise SandboxError(
                        f"the hub's network {self.hub_network} does not exist: start the hub "
                        "(deploy/compose.yaml) before its sandboxes"
                    )
                networks = [self.hub_network, network_name(spec)]
            container = self.client.containers.create(**config)
            try:
                if profile is Profile.SERVER:
                    hub.connect(container)
                container.start()
            except BaseException:
                with contextlib.suppress(DockerException, requests.exceptions.ConnectionError):
                    container.remove(force=True)
                raise
        return DockerProcess(container, argv, profile, networks, self.image)

    def kernels(self, spec: SandboxSpec) -> dict[str, DockerProcess]:
        """The sandbox's kernel containers that have not been removed, by kernel id."""
        with engine_errors(f"list the kernels of sandbox {spec.name}", self.image):
            found = self.client.containers.list(
                all=True,
                filters={"label": [f"{SANDBOX_LABEL}={spec.name}", f"{PROFILE_LABEL}=kernel"]},
            )
        kernels = {}
        for container in found:
            kernel = (container.labels or {}).get(KERNEL_LABEL)
            if kernel and (container.labels or {}).get(SANDBOX_LABEL) == spec.name:
                kernels[kernel] = DockerProcess(container, [], Profile.KERNEL, [], self.image)
        return kernels

    def remove(self, process: DockerProcess) -> None:
        """Stop (if need be) and remove one container of a sandbox (idempotent)."""
        with engine_errors("remove a sandbox container", self.image), contextlib.suppress(NotFound):
            process.container.remove(force=True)
        if process.returncode is None:
            process.returncode = -int(signal.SIGKILL)

    def release(self, spec: SandboxSpec) -> None:
        """Stop and remove every container of the sandbox, its network and its sockets,
        keeping the workspace (idempotent)."""
        with engine_errors(f"release sandbox {spec.name}", self.image):
            self._remove_containers(spec)
            network = self._get(self.client.networks, network_name(spec))
            if network is not None:
                with contextlib.suppress(NotFound):
                    network.remove()
            self._remove_volume(run_volume(spec))

    def remove_workspace(self, spec: SandboxSpec) -> None:
        """Release the sandbox and delete its workspace, for a grant that has ended
        (idempotent)."""
        self.release(spec)
        with engine_errors(f"remove the workspace of sandbox {spec.name}", self.image):
            self._remove_volume(workspace_volume(spec))

    def _mounts(
        self, spec: SandboxSpec, profile: Profile = Profile.SERVER, kernel: str | None = None
    ) -> list[Any]:
        mounts = [
            Mount(DATA, str(spec.views), type="bind", read_only=True),
            Mount(HOME, workspace_volume(spec), type="volume"),
        ]
        if profile is Profile.SERVER:
            mounts.append(Mount(RUN, run_volume(spec), type="volume"))
        elif kernel is not None:
            mounts.append(
                Mount(RUN, run_volume(spec), type="volume", subpath=f"{KERNELS}/{kernel}")
            )
        return mounts

    @staticmethod
    def _get(collection: Any, name: str) -> Any:
        try:
            return collection.get(name)
        except NotFound:
            return None

    def _ensure_network(self, spec: SandboxSpec) -> Any:
        name = network_name(spec)
        network = self._get(self.client.networks, name)
        if network is None:
            return self.client.networks.create(
                name, driver="bridge", internal=True, labels={SANDBOX_LABEL: spec.name}
            )
        self._check_ours(spec, "network", name, network.attrs)
        if not network.attrs.get("Internal"):
            raise SandboxError(f"network {name} exists but is not internal: remove it")
        return network

    def _ensure_volume(
        self, spec: SandboxSpec, name: str, driver: str, options: Mapping[str, str]
    ) -> Any:
        volume = self._get(self.client.volumes, name)
        if volume is None:
            try:
                return self.client.volumes.create(
                    name=name,
                    driver=driver,
                    driver_opts=dict(options),
                    labels={SANDBOX_LABEL: spec.name},
                )
            except APIError as error:
                if self.size_option is None or self.size_option not in options:
                    raise
                raise SandboxError(
                    f"the volume driver {driver} refused a workspace of "
                    f"{spec.limits.disk_bytes} bytes ({explain(error)}): put "
                    "/var/lib/docker/volumes on XFS mounted with pquota, use a volume plugin "
                    "with a size option, or set size_option=None to run without a limit"
                ) from error
        self._check_ours(spec, "volume", name, volume.attrs)
        return volume

    @staticmethod
    def _check_ours(spec: SandboxSpec, kind: str, name: str, attrs: Mapping[str, Any]) -> None:
        if (attrs.get("Labels") or {}).get(SANDBOX_LABEL) != spec.name:
            raise SandboxError(f"{kind} {name} exists but does not belong to sandbox {spec.name}")

    def _own_volumes(self, spec: SandboxSpec) -> None:
        """Give the workspace and the sockets to the sandbox's uid and let the grant's
        group read the views, in a container that may do nothing else (the only one that
        sees the views writable; no applicant code runs in it)."""
        views, *volumes = self._mounts(spec)
        container = self.client.containers.create(
            image=self.image,
            command=setup_command(spec),
            name=f"sbx-{spec.name}-{SETUP}-{secrets.token_hex(3)}",
            user="0:0",
            cap_drop=["ALL"],
            cap_add=["CHOWN", "FOWNER"],
            security_opt=["no-new-privileges"],
            read_only=True,
            network_mode="none",
            mounts=[Mount(DATA, views["Source"], type="bind"), *volumes],
            labels={SANDBOX_LABEL: spec.name, PROFILE_LABEL: SETUP},
        )
        try:
            container.start()
            code = int(container.wait(timeout=SETUP_SECONDS)["StatusCode"])
        finally:
            container.remove(force=True)
        if code != 0:
            raise SandboxError(
                f"could not give the volumes of {spec.name} to uid {spec.uid} and its views "
                f"to gid {spec.gid}"
            )

    def _remove_containers(self, spec: SandboxSpec) -> None:
        found = self.client.containers.list(
            all=True, filters={"label": f"{SANDBOX_LABEL}={spec.name}"}
        )
        for container in found:
            with contextlib.suppress(NotFound):
                if container.status not in EXITED and container.status != "created":
                    container.stop(timeout=STOP_SECONDS)
                container.remove(force=True)

    def _remove_volume(self, name: str) -> None:
        volume = self._get(self.client.volumes, name)
        if volume is not None:
            with contextlib.suppress(NotFound):
                volume.remove()
