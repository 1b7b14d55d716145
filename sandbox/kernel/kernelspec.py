"""The sandbox's one kernel spec, and the Jupyter server settings that go with it.

:func:`write_server_config` writes both where the sandbox reads them but cannot change
them: the bubblewrap runtime's spawner at each start (bound at ``/etc/sbx/jupyter``), the
sandbox image once when it is built (``python -m sandbox.kernel.kernelspec``).
``kernel.json`` names the ``sbx-sandbox`` provisioner (:mod:`sandbox.kernel.provisioner`),
which replaces the spec's command with the isolated one; the server settings make that
kernel the only one, over ipc, with no terminals, no language servers and no hidden files,
and load the exports extension (:mod:`sandbox.kernel.exports`): export requests are the
one way out, every route that would download a workspace file answers 403.
What varies per deployment (idle culling) goes on the server's command line
(:func:`server_arguments`).
"""

from __future__ import annotations

import json
import os
import sys
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


CONFIG_DIR = "/etc/sbx/jupyter"  # where the server finds it inside the sandbox (read-only)
EXPORTS_EXTENSION = "sandbox.kernel.exports"


def server_config() -> dict[str, Any]:
    """The Jupyter server's settings for sandboxed kernels, as a JSON config."""
    return {
        "ServerApp": {
            "terminals_enabled": False,
            "jpserver_extensions": {
                # Language servers and terminals run programs in the server's namespace,
                # outside the record: neither is loaded (and the server starts faster).
                "jupyter_lsp": False,
                "jupyter_server_terminals": False,
                # Export requests, and /nbconvert/, /view/ and binary contents closed.
                EXPORTS_EXTENSION: True,
            },
            # An extension that fails to load stops the server: without the one above,
            # files could be downloaded.
            "reraise_server_extension_failures": True,
        },
        "MappingKernelManager": {"default_kernel_name": KERNEL_NAME},
        "KernelManager": {"transport": "ipc"},
        "KernelSpecManager": {"allowed_kernelspecs": [KERNEL_NAME], "ensure_native_kernel": False},
        "ContentsManager": {
            "allow_hidden": False,  # hidden files, the export outbox ~/.sbx/outbox among them
            # /files/ (JupyterLab's Download, "Open in New Browser Tab") answers 403.
            "files_handler_class": f"{EXPORTS_EXTENSION}.DownloadRefused",
            "files_handler_params": {},
        },
    }


def server_arguments(idle_timeout: int) -> list[str]:
    """The server's command-line settings: idle kernels are culled, and an idle server
    stops, after ``idle_timeout`` seconds."""
    return [
        f"--MappingKernelManager.cull_idle_timeout={idle_timeout}",
        "--MappingKernelManager.cull_interval=60",
        "--MappingKernelManager.cull_connected=True",
        f"--ServerApp.shutdown_no_activity_timeout={idle_timeout}",
    ]


def write_server_config(folder: Path, python: Path) -> None:
    """The server's configuration folder: its settings, the one kernel spec, and readable
    by all but writable by its owner only."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_kernel_spec(folder, python)
    (folder / "jupyter_server_config.json").write_text(json.dumps(server_config(), indent=2))
    # jupyter_core writes this marker into its (here read-only) configuration folder
    # once it finds ~/.ipython, which the first session's kernel leaves in the workspace.
    (folder / "migrated").write_text("never: the sandbox's configuration is the platform's\n")
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.kernel.kernelspec FOLDER PYTHON`` (the sandbox image's build)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m sandbox.kernel.kernelspec FOLDER PYTHON", file=sys.stderr)
        return 2
    write_server_config(Path(args[0]), Path(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
