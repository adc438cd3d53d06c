"""Run ``python -m MODULE ARGS`` commands without paying MONAI's import in each: a fork server for the test suite.

Every MONAI command of the suite is a process of its own, and about 5 s of each on this machine is ``import monai``
(torch, Ignite's checkpoint handler with ``torch.distributed``, SciPy, Matplotlib, scikit-image), the same bytes
every time. The server is a fresh interpreter that imports exactly what ``python -m monai.bundle`` imports before its
``main`` runs (``monai.bundle.scripts`` and Fire), and nothing of ``isic_monai``; for each command it forks a child
that takes the command's working folder, environment, arguments and output files and runs the module with
:func:`runpy.run_module` as ``__main__``, as ``python -m`` does. The command still runs in a process of its own, from
the MONAI CLI's real entry point, and every ``isic_monai`` module it needs is imported fresh in that child.

What a fork cannot give a fresh interpreter, :func:`can_run` refuses, and the caller starts a real process instead:
another interpreter, or an environment that differs in a variable read at import time (``PYTHON*``, ``MONAI_*``,
``TORCH_*``, ``CUDA_*``, ...). ``OMP_NUM_THREADS`` is applied with :func:`torch.set_num_threads`, and each child
draws fresh NumPy and torch seeds, as a fresh process would. ``ISIC_TEST_FRESH_CLI=1`` turns the server off: every
command then starts its own interpreter (docs/architecture.md#the-warm-monai-server).

Protocol: one JSON line a request on a Unix socket, answered by ``{"pid": N}`` when the child starts and
``{"returncode": N}`` when it ends; one request at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# variables the child may carry different from the server's: read at run time, not when monai is imported
RUN_TIME_VARIABLES = ("ISIC_MONAI_", "OMP_NUM_THREADS", "TORCH_HOME", "PYTEST_", "TMPDIR", "HOME", "MPLBACKEND",
                      "MPLCONFIGDIR", "PWD", "OLDPWD", "_")


def can_run(python: str | None, env: dict[str, str], server_env: dict[str, str]) -> bool:
    """Whether a child of a server started with ``server_env`` behaves as ``python -m`` in a fresh interpreter with
    ``env`` would.

    Args:
        python: the interpreter asked for (``None``: this one).
        env: the command's whole environment.
        server_env: the server's environment when it imported MONAI.
    """
    if os.environ.get("ISIC_TEST_FRESH_CLI") == "1" or (python not in (None, sys.executable)):
        return False
    changed = {k for k in set(env) | set(server_env) if env.get(k) != server_env.get(k)}
    return all(k.startswith(RUN_TIME_VARIABLES) for k in changed)


# ---------------------------------------------------------------------------------------------------- the server
def _child(request: dict) -> None:
    """In the forked child: take the command's folder, environment and files, run the module, exit with its code."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        import runpy

        import numpy as np
        import torch

        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        torch.seed()  # a fresh process starts from a random seed; a forked one would share the server's
        np.random.seed(int.from_bytes(os.urandom(4), "little"))
        sys.argv = [request["module"], *request["args"]]
        sys.path[0] = request["cwd"]  # ``python -m`` puts the working folder first
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:  # as the interpreter ends: None is 0, an int itself, anything else printed, 1
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the exit code
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path: str) -> None:
    """Import MONAI once, then fork a child for each request on the Unix socket ``path``."""
    import fire  # noqa: F401 - with monai.bundle.scripts, what monai/bundle/__main__.py imports before fire.Fire()
    import monai.bundle.scripts  # noqa: F401
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb", buffering=0) as stream:
            line = stream.readline()
            if not line:
                continue
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _child(request)
            try:
                stream.write((json.dumps({"pid": pid}) + "\n").encode())
            finally:
                _, status = os.waitpid(pid, 0)
            with contextlib.suppress(OSError):  # the client gave up (its timeout) and closed the connection
                stream.write((json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n").encode())


# ---------------------------------------------------------------------------------------------------- the client
class WarmCli:
    """A fork server started with :meth:`server_env` (the caller starts one on first use) and stopped with
    :meth:`close`."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="warm_cli_"))
        self.socket = str(self.folder / "socket")
        self.env = self.server_env()
        self.process = subprocess.Popen([sys.executable, __file__, "serve", self.socket], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=self.env, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the warm MONAI CLI server did not start")
        self.count = 0

    @staticmethod
    def server_env() -> dict[str, str]:
        """The environment a server started now imports MONAI with: this process's, unbuffered."""
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run(self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
            ) -> subprocess.CompletedProcess:
        """``python -m module *args`` in a forked child; its output as text, as ``subprocess.run`` returns it.

        Raises:
            subprocess.TimeoutExpired: the child ran past ``timeout`` (it is killed first).
        """
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        request = {"module": module, "args": list(map(str, args)), "cwd": str(Path(cwd).resolve()), "env": env,
                   "stdout": str(out), "stderr": str(err)}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn, conn.makefile("rwb", buffering=0) as stream:
            conn.connect(self.socket)
            stream.write((json.dumps(request) + "\n").encode())
            pid = json.loads(stream.readline())["pid"]
            conn.settimeout(timeout)
            try:
                line = stream.readline()
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # the server reaps it; its answer goes to a closed socket
                raise subprocess.TimeoutExpired([module, *args], timeout) from None
        returncode = json.loads(line)["returncode"]
        stdout, stderr = (p.read_text(errors="replace") for p in (out, err))
        out.unlink()
        err.unlink()
        return subprocess.CompletedProcess([sys.executable, "-m", module, *args], returncode, stdout, stderr)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.process.kill()
        self.process.wait()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
