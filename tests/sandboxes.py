"""Real sandboxes for tests: bubblewrap, cgroups and loop-mounted workspaces on this host.

``SandboxFactory`` makes prepared sandboxes with a uid of their own (a range per xdist
worker, so parallel workers never share one) on a stage that the sandbox uids can reach
(pytest's ``tmp_path`` sits under an owner-only folder), and releases them all at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sandbox.runtime.bwrap import BubblewrapRuntime, Profile
from sandbox.runtime.spec import Limits, SandboxSpec
from tests.conftest import REPO_ROOT

SANDBOX_PYTHON = REPO_ROOT / ".venv-sandbox"
UID_BASE = 300_000


def _worker_offset() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return (int(worker) if worker.isdigit() else 0) * 1000 + (os.getpid() % 97) * 10


class SandboxFactory:
    """Prepared sandboxes over one views folder; ``make`` gives a new one each call."""

    def __init__(self, root: Path, views: Path) -> None:
        self.runtime = BubblewrapRuntime()
        self.root = root
        self.views = views
        self.made: list[SandboxSpec] = []
        self._next_uid = UID_BASE + _worker_offset()

    def make(
        self, name: str | None = None, *, limits: Limits | None = None, python: Path | None = None
    ) -> SandboxSpec:
        self._next_uid += 1
        uid = self._next_uid
        name = name or f"t{uid}"
        spec = SandboxSpec(
            name=name,
            uid=uid,
            gid=uid,
            views=self.views,
            state=self.root / "state" / name,
            stage=self.root / "stage" / name,
            python=python or SANDBOX_PYTHON,
            limits=limits or Limits(memory_bytes=512 << 20, pids=64, disk_bytes=64 << 20),
        )
        self.runtime.prepare(spec)
        self.made.append(spec)
        return spec

    def run(
        self,
        spec: SandboxSpec,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        profile: Profile = Profile.KERNEL,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``spec`` to its end; its exit status and output."""
        process = self.runtime.launch(
            spec, argv, profile=profile, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise
        return subprocess.CompletedProcess(
            argv, process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def python(
        self, spec: SandboxSpec, code: str, *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run(spec, [str(SANDBOX_PYTHON / "bin" / "python"), "-c", code], timeout=timeout)

    def close(self) -> None:
        for spec in reversed(self.made):
            self.runtime.release(spec)


@pytest.fixture
def sandboxes() -> Iterator[SandboxFactory]:
    """Sandboxes over a small views folder (``people.csv``), released after the test."""
    root = Path(tempfile.mkdtemp(prefix="sbx-test-", dir="/tmp"))  # noqa: S108
    os.chmod(root, 0o711)  # noqa: S103 - the sandbox uids traverse it
    views = root / "views"
    views.mkdir(mode=0o700)
    (views / "people.csv").write_text("district,age_band,count\n市南区,30-39,12\n崂山区,40-49,15\n")
    factory = SandboxFactory(root, views)
    try:
        yield factory
    finally:
        factory.close()
        shutil.rmtree(root, ignore_errors=True)
