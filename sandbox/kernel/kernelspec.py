"""The sandbox's one kernel spec, and the Jupyter server settings that go with it.

The spawner writes both into the sandbox: ``kernel.json`` names the ``sbx-sandbox``
provisioner (:mod:`sandbox.kernel.provisioner`), which replaces the spec's command with
the isolated one; the server settings make that kernel the only one, over ipc, with no
terminals and no hidden files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KERNEL_NAME = "sbx"
PROVISIONER = "sbx-sandbox"


def kernel_spec(python: Path, display_name: str = "Python 3 (sandbox)") -> dict[str, Any]:
    """The content of ``kernel.json`` for the sandbox's Python environment ``python``."""
    return {
        "argv": [
            str(python / "bin" / "python"),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "message",  # a signal would reach bubblewrap, not the kernel
        "metadata": {"kernel_provisioner": {"provisioner_name": PROVISIONER}},
    }


def write_kernel_spec(folder: Path, python: Path, display_name: str = "Python 3 (sandbox)") -> Path:
    """Write ``<folder>/kernels/sbx/kernel.json`` (put ``folder`` on ``JUPYTER_PATH``);
    returns the file's path."""
    path = folder / "kernels" / KERNEL_NAME / "kernel.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kernel_spec(python, display_name), indent=1) + "\n")
    return path


def server_config() -> dict[str, Any]:
    """The Jupyter server's settings for sandboxed kernels, as a JSON config."""
    return {
        "ServerApp": {"terminals_enabled": False},
        "MappingKernelManager": {"default_kernel_name": KERNEL_NAME},
        "KernelManager": {"transport": "ipc"},
        "KernelSpecManager": {"allowed_kernelspecs": [KERNEL_NAME], "ensure_native_kernel": False},
        "ContentsManager": {"allow_hidden": False},
    }
