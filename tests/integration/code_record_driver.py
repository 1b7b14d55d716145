"""Drives a sandboxed kernel the way the Jupyter server does, from inside the server
namespace (run with the sandbox's Python by tests/integration/test_code_record.py).

It starts kernel ``sbx`` with jupyter_client's KernelManager (so through the ``sbx-sandbox``
provisioner and its auditing proxy), runs cells, and prints one line per step:
``SBX {"step": ..., ...}``. At a step named ``pause-*`` it waits for a line on stdin, so the
test can change the recording endpoint in between.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from sandbox.kernel.kernelspec import write_kernel_spec

PROBE = """
import json, os, socket, urllib.request
facts = {}
facts["interfaces"] = [name for _, name in socket.if_nameindex()]
facts["uid"] = os.getuid()
facts["data"] = open("/data/people.csv", encoding="utf-8").read()
facts["environ"] = dict(os.environ)
facts["processes"] = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                facts["processes"][pid] = handle.read().replace(b"\\0", b" ").decode()
        except OSError:
            pass
try:
    urllib.request.urlopen(URL, data=b'{"code": "forged"}', timeout=3)
    facts["ledger"] = "reached"
except Exception as error:
    facts["ledger"] = f"{type(error).__name__}: {error}"
facts["run"] = sorted(os.listdir("/run/sbx"))
facts["oom_score_adj"] = open("/proc/self/oom_score_adj").read().strip()
facts["server_folder"] = os.path.exists(os.path.dirname(FRONT))
client = socket.socket(socket.AF_UNIX)
try:
    client.connect(FRONT + "-1")
    facts["frontend"] = "connected"
except OSError as error:
    facts["frontend"] = type(error).__name__
finally:
    client.close()
print(json.dumps(facts))
"""

RAW = """
import json, time, zmq
from jupyter_client.session import Session
info = json.load(open("/run/sbx/connection.json"))
session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
context = zmq.Context()
shell = context.socket(zmq.DEALER)
shell.connect(f"ipc://{info['ip']}-{info['shell_port']}")
code = "open('/home/jovyan/raw.txt', 'w').write('ran unrecorded')"
content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
           "allow_stdin": False, "stop_on_error": False}
message = session.send(shell, "execute_request", content)
time.sleep(0.2)
shell.close(linger=1000)
context.term()
print(json.dumps({"raw": message["header"]["msg_id"]}))
"""


def emit(step: str, **fields: Any) -> None:
    print("SBX " + json.dumps({"step": step, **fields}, default=str), flush=True)


def pause(step: str) -> None:
    emit(step)
    sys.stdin.readline()


def run(client: Any, step: str, code: str) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = []

    def keep(message: dict[str, Any]) -> None:
        if message["msg_type"] in ("stream", "error", "execute_result"):
            outputs.append({"type": message["msg_type"], "content": message["content"]})

    reply = client.execute_interactive(code, timeout=30, output_hook=keep, allow_stdin=False)
    text = "".join(o["content"].get("text", "") for o in outputs if o["type"] == "stream")
    result = {
        "message": reply["parent_header"]["msg_id"],
        "code": code,
        "reply": reply["content"],
        "outputs": outputs,
        "stdout": text,
    }
    emit(step, **result)
    return result


def debug_request(client: Any) -> dict[str, Any]:
    arguments = {"expression": "open('/home/jovyan/debug.txt', 'w')", "context": "repl"}
    content = {"type": "request", "seq": 1, "command": "evaluate", "arguments": arguments}
    request = client.session.msg("debug_request", content)
    client.control_channel.send(request)
    while True:
        reply = client.control_channel.get_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
            return {"type": reply["msg_type"], "content": reply["content"]}


def main() -> None:
    specs = Path("/tmp/sbx-kernels")  # noqa: S108 - the server namespace's private /tmp
    write_kernel_spec(specs, Path(os.environ["SBX_SANDBOX_PYTHON"]))
    os.environ["JUPYTER_PATH"] = str(specs)
    os.environ["JUPYTER_RUNTIME_DIR"] = "/tmp/jupyter-runtime"  # noqa: S108
    manager = KernelManager(kernel_name="sbx")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=30)
    kernel = manager.kernel_id
    front = manager.ip
    emit("started", kernel=kernel, frontend=front, connection=manager.get_connection_info())
    try:
        run(client, "first", "print(6 * 7)")
        variables = f"URL = {os.environ['SBX_RECORD_URL']!r}\nFRONT = {front!r}\n"
        run(client, "probe", variables + PROBE)
        run(client, "raw", RAW)
        run(client, "after-raw", "import os; print(os.path.exists('/home/jovyan/raw.txt'))")
        pause("pause-refuse")
        run(client, "refused", "open('/home/jovyan/refused.txt', 'w').write('ran')")
        pause("pause-accept")
        emit("debug", **debug_request(client))
        run(client, "accepted", "print('recorded again')")
        manager.restart_kernel(now=False)
        client.wait_for_ready(timeout=30)
        run(client, "restarted", "import os; print(os.getpid())")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    emit(
        "stopped",
        kernel_folder=os.path.exists(f"/run/sbx/kernels/{kernel}"),
        server_folder=os.path.exists(f"/run/sbx/server/{kernel}"),
    )


if __name__ == "__main__":
    main()
