"""Warm start for model jobs on one machine: a fork server with torch, transformers and peft
already imported.

A model job (a rule of ``MODEL_RULES``) pays about 7 s of imports before it does anything
(torch 2 s, transformers and peft 5 s, measured on this project's 2-core CPU machines); the
embedded demo runs about 80 such jobs and the test suite about 150. With ``MP_WARM_START=1``
(set by ``make demo`` and by the tests' Snakemake runs; never on a cluster node), the job's
script hands its ``snakemake`` object, working directory, environment and standard streams
to a server that imported those libraries once, and the server forks a child that runs the
job exactly as ``workflow/scripts/run.py`` would. The job's process waits for the child and
exits with its status; if the job's process is killed (Snakemake cancelling a run), the
server kills the child.

- One server per interpreter, package source and library environment: the socket's name is a
  hash of ``sys.executable``, every source file of this package (path, size, mtime) and the
  ``HF_*`` / ``TRANSFORMERS_*`` / ``TORCH*`` variables, so an edited module or another venv
  gets a fresh server. The server imports nothing of this package beyond this module; a
  child imports the package from disk.
- The server exits after ``IDLE_SECONDS`` without a job.
- Anything that prevents the hand-over (no ``fork``, no Unix sockets, a server that does not
  start) runs the job in its own process, as without warm start.
- Snakemake's ``benchmark:`` files keep the job's wall time; their CPU and memory columns then
  count the waiting process only, not the child.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV_FLAG = "MP_WARM_START"
IDLE_SECONDS = 120.0
START_TIMEOUT = 120.0

# rules that load a model (workflow/envs/ml.yaml; tests/workflow/test_warm.py checks the list)
MODEL_RULES = frozenset({
    "judge", "prepare_model", "prepare_organism", "rollouts", "system_prompt",
    "generate_documents", "sdf_dataset", "train_lora", "belief_check", "ooc_pairs",
    "activations", "judge_raw", "token_cosines", "sdf_alignment",
})

# imported once by the server (what model jobs spend their first seconds on)
PRELOAD = ("torch", "transformers", "transformers.modeling_utils",
           "transformers.generation.utils", "transformers.models.llama.modeling_llama",
           "peft", "safetensors.torch", "numpy", "polars", "snakemake.script")

_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "TORCH", "PYTORCH_", "CUDA_", "OMP_", "MKL_")
_PACKAGE = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- client


def dispatch(snakemake: Any) -> None:
    """Run the job's entry point (``workflow/scripts/run.py``): in a child of the warm server
    for model rules when ``MP_WARM_START`` asks for it, else in this process. Not imported by
    any entry point, so not a code input of any rule: it changes where a job runs, not what
    it computes."""
    if wanted(snakemake.rule):
        status = run_warm(snakemake)
        if status is not None:
            if status:
                sys.exit(status)
            return
    from motivation_profiles.pipeline.common import run
    from motivation_profiles.pipeline.registry import entry_point

    run(snakemake, entry_point(snakemake.rule))


def wanted(rule: str, environ: dict[str, str] | None = None) -> bool:
    """Whether a job of ``rule`` should go through the warm server."""
    env = os.environ if environ is None else environ
    return (env.get(ENV_FLAG, "") not in ("", "0") and rule in MODEL_RULES
            and "SLURM_JOB_ID" not in env and hasattr(os, "fork")
            and hasattr(socket, "send_fds"))


def server_key(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    h = hashlib.sha256(sys.executable.encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for k in sorted(env):
        if k.startswith(_ENV_PREFIXES):
            h.update(f"{k}={env[k]}\n".encode())
    return h.hexdigest()[:20]


def socket_path(key: str) -> Path:
    base = Path(tempfile.gettempdir()) / f"mp-warm-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    return base / f"{key}.sock"


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _server_connection(path: Path) -> socket.socket | None:
    """A connection to the server at ``path``, starting it when none answers."""
    conn = _connect(path)
    if conn is not None:
        return conn
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter; the others wait, then connect
        conn = _connect(path)
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log = open(path.with_suffix(".log"), "a")  # noqa: SIM115 (the server's)
        subprocess.Popen([sys.executable, "-m", "motivation_profiles.pipeline.warm",
                          str(path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(_PACKAGE.parent), *filter(None, [
                                 os.environ.get("PYTHONPATH")])])})
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.1)
    return None


def _send(conn: socket.socket, payload: bytes, fds: list[int]) -> None:
    """The payload's length with the file descriptors, then the payload."""
    socket.send_fds(conn, [struct.pack("!Q", len(payload))], fds)
    conn.sendall(payload)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("warm-start peer closed the connection")
        buf += chunk
    return buf


def run_warm(snakemake: Any, step: str | None = None) -> int | None:
    """Run the job in a child of the warm server; its exit status, or None when the server
    could not take it (the caller then runs the job itself). ``step`` (``module:function``)
    replaces the rule's entry point (tests)."""
    try:
        # the job object is unpickled in the child, after it took the job's sys.path
        payload = pickle.dumps({"job": pickle.dumps(snakemake), "cwd": os.getcwd(),
                                "step": step, "env": dict(os.environ),
                                "sys_path": list(sys.path)})
        conn = _server_connection(socket_path(server_key()))
    except Exception as exc:  # noqa: BLE001 (any failure: run the job here)
        print(f"warm start unavailable ({exc!r}); running the job in this process",
              file=sys.stderr)
        return None
    if conn is None:
        print("warm start: no server answered; running the job in this process",
              file=sys.stderr)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    with conn:
        _send(conn, payload, [0, 1, 2])
        # a killed job kills its child: closing the connection tells the server
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: os._exit(128 + signum))
        try:
            (status,) = struct.unpack("!i", _recv_exact(conn, 4))
        except ConnectionError:
            print("warm start: the server went away while the job ran", file=sys.stderr)
            return 1
    return status


# ----------------------------------------------------------------------------- server


def _child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the job's process and run it; the exit status."""
    conn.close()
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[:] = request["sys_path"]
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    try:
        snakemake = pickle.loads(request["job"])
        import importlib

        from motivation_profiles.pipeline.common import run
        from motivation_profiles.pipeline.registry import entry_point

        if request.get("step"):
            module, _, name = request["step"].partition(":")
            step = getattr(importlib.import_module(module), name)
        else:
            step = entry_point(snakemake.rule)
        run(snakemake, step, preloaded=True)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (reported, then the job fails)
        import traceback

        traceback.print_exc()
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


def serve(path: Path, idle: float = IDLE_SECONDS) -> None:
    import importlib

    # no thread pools before fork: a child sets its own thread count (torch.set_num_threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # child pid -> the job's connection
    last = time.monotonic()
    try:
        while children or time.monotonic() - last < idle:
            for key, _ in sel.select(timeout=0.2):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    fds: list[int] = []
                    try:
                        head, fds, _, _ = socket.recv_fds(conn, 8, 3)
                        (n,) = struct.unpack("!Q", head)
                        request = pickle.loads(_recv_exact(conn, n))
                        if len(fds) != 3:
                            raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
                    except Exception as exc:  # noqa: BLE001 (a bad request fails that job only)
                        print(f"warm start: bad request: {exc!r}", file=sys.stderr, flush=True)
                        for fd in fds:
                            os.close(fd)
                        conn.close()
                        continue
                    pid = os.fork()
                    if pid == 0:  # the job
                        sel.close()
                        listener.close()
                        for other in children.values():
                            other.close()
                        os._exit(_child(conn, request, fds))
                    for fd in fds:
                        os.close(fd)
                    children[pid] = conn
                    sel.register(conn, selectors.EVENT_READ, pid)
                else:  # the job's process closed the connection: it was killed
                    pid = key.data
                    sel.unregister(key.fileobj)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is None:
                    continue
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                conn.close()
                last = time.monotonic()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
