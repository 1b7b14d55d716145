"""Sandboxed kernels and the executed-code record.

- :mod:`sandbox.kernel.record` — what is recorded (:class:`Execution`), the
  :class:`Recorder` interface and the HTTP recorder of the platform's ledger.
- :mod:`sandbox.kernel.proxy` — the auditing proxy between the trusted server and a
  kernel: nothing runs that was not recorded first.
- :mod:`sandbox.kernel.provisioner` — the ``sbx-sandbox`` kernel provisioner: kernels in a
  kernel namespace, reached only through the proxy.
- :mod:`sandbox.kernel.kernelspec` — the kernel spec and the server settings that use it.
- :mod:`sandbox.kernel.exports` — the server extension that sends export requests to the
  gateway and closes the server's download routes.

This package runs inside the sandbox's own Python environment: it imports only the
standard library, pyzmq, jupyter_client, jupyter_server, tornado, traitlets,
:mod:`sandbox.runtime` and :mod:`sandbox.notebook`.
"""

from sandbox.kernel.record import (
    MAX_CODE_BYTES,
    Execution,
    HttpRecorder,
    Kind,
    NotRecorded,
    Receipt,
    Recorder,
)

__all__ = [
    "MAX_CODE_BYTES",
    "Execution",
    "HttpRecorder",
    "Kind",
    "NotRecorded",
    "Receipt",
    "Recorder",
]
