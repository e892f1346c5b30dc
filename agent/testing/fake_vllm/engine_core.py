"""The ``VLLM::EngineCore`` child process, as vLLM's v1 engine runs one beside its API server.

Like the real one: its argv[0] and ``/proc/PID/comm`` name it ``VLLM::EngineCore`` (comm keeps 15
characters), it ignores SIGHUP and the death of its parent (real engine processes outlive a
SIGKILL of the API server), and SIGTERM/SIGINT end it, unless ``ignore-sigterm`` asked otherwise.
It is started as ``python -S`` on this package's directory, so it imports only this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .logs import write_line

ENGINE_NAME = "VLLM::EngineCore"
ENGINE_CORE_FLAG = "--fake-run-engine-core"  # internal: how the API server starts its child
CORE_IGNORES_TERM = "FAKE_VLLM_CORE_IGNORES_TERM"  # internal: ignore-sigterm, for the child
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    """The child: sleeps until SIGTERM/SIGINT/SIGKILL, ignores SIGHUP and the death of its parent."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    ignore = os.environ.get(CORE_IGNORES_TERM) == "1"
    for sig in EXIT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if ignore else signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, ENGINE_NAME.encode(), 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass
    write_line(
        sys.stdout,
        f"(EngineCore_DP0 pid={os.getpid()}) INFO {time.strftime('%m-%d %H:%M:%S')}"
        " [core.py:1] Waiting for init message from front-end.",
    )
    while True:
        signal.pause()


def is_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP, or a debugger): state T or t in /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def start(ignore_term: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if ignore_term:
        env[CORE_IGNORES_TERM] = "1"
    # argv[0] is the process title, so Python may not find its own prefix: tell it.
    env["PYTHONHOME"] = f"{sys.base_prefix}:{sys.base_exec_prefix}"
    return subprocess.Popen(
        [ENGINE_NAME, "-S", PACKAGE_DIR, ENGINE_CORE_FLAG],
        executable=sys.executable,
        env=env,
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 0.5) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass
