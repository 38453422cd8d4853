"""Worker processes: run one case at a time in a child so that a broken kernel cannot end the run.

A `Worker` is one long-lived child process: a fresh interpreter started with `python -c` (never a fork of
a process that may hold a CUDA context, and unlike multiprocessing's 'spawn' it does not re-import the
parent's __main__), talking over two pipes. `Worker.call(func, *args)` sends a module-level function and
picklable arguments, waits for the answer and returns a `WorkerResult`:

  status "ok"       func returned; `value` holds its (picklable) return value.
  status "crashed"  the child died (a segfault, an abort, an illegal memory access that kills the
                    process, `os._exit`), or func raised an exception it did not catch itself, or func
                    returned but the CUDA context is unusable afterwards (a sticky CUDA error such as an
                    illegal address, which turns every later CUDA call in that process into an error).
                    `reason` says which: "worker died: signal 11 (SIGSEGV)", "exit code 3",
                    "raised ValueError: ... (file.py:12)", "CUDA context lost: ...". In the last case
                    `value` still holds what func returned.
  status "timeout"  no answer within the per-call timeout; the child is killed (SIGKILL: a kernel spinning
                    on the GPU ignores everything gentler).

Policy on exceptions: an exception escaping func is a crash of that call, not of the worker. The child
survives it and stays in use unless its CUDA context is broken; callers that want failures as data (the
case pipeline does: a raising kernel is an "error" outcome) catch them inside func. After a crash or timeout the
dead child is replaced on the next call, so a run goes on with a fresh process and a fresh CUDA context.

The child ignores SIGINT: Ctrl-C reaches the parent, which kills its children at exit (and `close()`
does it at once); on Linux a child also dies with its parent (PR_SET_PDEATHSIG), so a hung kernel never
outlives a killed run. `env` entries (e.g. CUDA_VISIBLE_DEVICES to pin one GPU per worker
in a multi-GPU run) are set before the child starts, hence before it imports torch; the child imports
torch once at start so that each call pays only for itself.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection

STATUS_OK = "ok"
STATUS_CRASHED = "crashed"
STATUS_TIMEOUT = "timeout"

# How long a child may take to import torch and report ready; a slow shared filesystem can make this long.
START_TIMEOUT_S = 120.0
# Time given to a child to exit by itself on close() before it is killed.
CLOSE_GRACE_S = 2.0

CONTEXT_LOST = "CUDA context lost"
PR_SET_PDEATHSIG = 1


@dataclass
class WorkerResult:
    status: str                 # "ok" | "crashed" | "timeout"
    value: object = None        # func's return value when it returned
    reason: str | None = None   # why not ok, one line

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def describe_exit(exitcode: int | None) -> str:
    """A child's exit code as words: negative codes are the signal that killed it."""
    if exitcode is None:
        return "worker died (exit status unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"worker died: signal {-exitcode} ({name})"
    return f"worker died: exit code {exitcode}"


def _one_line(exc: BaseException) -> str:
    from .case import one_line  # imported late to keep the child's start lean

    return one_line(exc)


def _cuda_context_error() -> str | None:
    """Why this process's CUDA context is unusable, or None (also None when CUDA was never used)."""
    import torch

    if not torch.cuda.is_initialized():
        return None
    try:
        torch.cuda.synchronize()
    except Exception as e:  # a sticky CUDA error surfaces as any RuntimeError subclass
        return _one_line(e)
    return None


def _child_main(conn_in: Connection, conn_out: Connection) -> None:
    import torch  # noqa: F401  (paid once per worker, not per call)

    conn_out.send(("ready", os.getpid()))
    while True:
        try:
            msg = pickle.loads(conn_in.recv_bytes())
        except (EOFError, OSError):
            return
        if msg is None:
            return
        func, args = msg
        try:
            value = func(*args)
        except BaseException as e:  # anything func raises is reported, never allowed to end the loop
            status, value, reason = STATUS_CRASHED, None, f"raised {_one_line(e)}"
        else:
            status, reason = STATUS_OK, None
        broken = _cuda_context_error()
        if broken:
            status, reason = STATUS_CRASHED, f"{CONTEXT_LOST}: {broken}"
        try:
            conn_out.send((status, value, reason))
        except Exception as e:  # an unpicklable return value
            conn_out.send((STATUS_CRASHED, None, f"result could not be sent back: {_one_line(e)}"))
        if broken:
            # Every later CUDA call here would fail too; exit so that the parent starts a fresh process.
            os._exit(3)


# The child's entry point. A plain interpreter started with -c, not multiprocessing's spawn: spawn re-imports
# the parent's __main__ (a test runner, `python -m fp4bench`), which is slow and can re-run a command line.
_CHILD_BOOT = "import sys; from fp4bench.isolation import _child_entry; _child_entry(int(sys.argv[1]), int(sys.argv[2]))"

_live_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()


def _kill_live_workers() -> None:
    for worker in list(_live_workers):
        worker._kill()


atexit.register(_kill_live_workers)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a hung child never outlives a killed run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends an idle child
        pass


def _child_entry(read_fd: int, write_fd: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn_in = Connection(read_fd, writable=False)
    conn_out = Connection(write_fd, readable=False)
    # The parent's import path, so that functions from its modules (tests included) unpickle here.
    sys.path[:] = conn_in.recv()
    _child_main(conn_in, conn_out)


class Worker:
    """One child process that runs calls one at a time; replaced transparently after a crash or timeout."""

    def __init__(self, env: dict[str, str] | None = None, timeout_s: float = 600.0):
        self.env = dict(env or {})
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self.starts = 0   # how many children this worker has started (tests and logs read it)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._alive() else None

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD_BOOT, str(p2c_r), str(c2p_w)],
                                    pass_fds=(p2c_r, c2p_w), env={**os.environ, **self.env},
                                    stdin=subprocess.DEVNULL)
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self._proc = proc
        self._send = Connection(p2c_w, readable=False)
        self._recv = Connection(c2p_r, writable=False)
        _live_workers.add(self)
        self.starts += 1
        self._send.send(list(sys.path))
        if not self._recv.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"worker process did not start within {START_TIMEOUT_S:.0f} s")
        try:
            self._recv.recv()
        except (EOFError, OSError):
            reason = self._death_reason()
            self._kill()
            raise RuntimeError(f"worker process failed to start: {reason}") from None

    def _kill(self) -> None:
        proc, send, recv = self._proc, self._send, self._recv
        self._proc = self._send = self._recv = None
        for conn in (send, recv):
            if conn is not None:
                conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:  # unkillable (in the kernel's D state): leave it to the OS
                pass

    def _death_reason(self) -> str:
        if self._proc is None:
            return describe_exit(None)
        try:
            return describe_exit(self._proc.wait(5.0))
        except subprocess.TimeoutExpired:
            return describe_exit(None)

    def call(self, func, *args, timeout_s: float | None = None) -> WorkerResult:
        """Run func(*args) in the child; func must be importable by name (a module-level function).

        Arguments that cannot be pickled raise here, in the caller, before anything ran.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        if not self._alive():
            self._kill()
            self._start()
        payload = pickle.dumps((func, args))
        try:
            self._send.send_bytes(payload)
        except OSError:  # BrokenPipeError: the child died between calls
            reason = self._death_reason()
            self._kill()
            return WorkerResult(STATUS_CRASHED, reason=reason)
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                return WorkerResult(STATUS_TIMEOUT, reason=f"no result after {limit:g} s (worker killed)")
            # Poll in slices so that a child that dies is noticed at once, not at the deadline.
            if self._recv.poll(min(remaining, 0.25)):
                try:
                    status, value, reason = self._recv.recv()
                except (EOFError, OSError):
                    reason = self._death_reason()
                    self._kill()
                    return WorkerResult(STATUS_CRASHED, reason=reason)
                if reason and reason.startswith(CONTEXT_LOST):
                    self._kill()  # the child exits by itself; reap it now
                return WorkerResult(status, value, reason)
            if not self._alive() and not self._recv.poll(0):
                reason = self._death_reason()
                self._kill()
                return WorkerResult(STATUS_CRASHED, reason=reason)

    def close(self) -> None:
        """Stop the child (politely, then by force); the worker may be used again afterwards."""
        if self._alive():
            try:
                self._send.send_bytes(pickle.dumps(None))
                self._proc.wait(CLOSE_GRACE_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        _live_workers.discard(self)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
