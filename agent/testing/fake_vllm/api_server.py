"""The API server process, as vLLM 0.32's ``api_server.py`` runs: its life from start to exit.

Like the real one: it binds the port early (a busy port fails at once, exit 1) but listens only
once loaded, so connections are refused while loading; it spawns one ``VLLM::EngineCore`` child
before loading; SIGTERM/SIGINT stop it with status 0 and take the child along; when the EngineCore
dies, ``/health`` answers 503 and the server exits 0 ``DEATH_EXIT_DELAY`` later (vllm issue 48966);
a SIGSTOPped EngineCore pauses the engine until SIGCONT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from . import engine_core, loading
from .cli import PROG, UsageError, parse_args
from .core_client import Engine
from .engine_core import EXIT_SIGNALS
from .faults import ReadyFaults
from .logs import ulog, vlog, write_line, write_raw
from .server import VERSION, FakeServer

DEATH_EXIT_DELAY = 1.0  # real vLLM 0.32, idle: /health 503, then exit 0 1.0 s after its EngineCore died


def bind_socket(host: str | None, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # Like vLLM with host None: IPv4 first.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, kind, proto, _name, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR, not SO_REUSEPORT: a busy port is a clean EADDRINUSE.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def _error(where: str, msg: str) -> str:
    return f"ERROR {time.strftime('%m-%d %H:%M:%S')} [{where}] {msg}"


class Main:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.engine_core: subprocess.Popen | None = None
        self.server: FakeServer | None = None

    def fail(self, lines: list[str], status: int = 1) -> None:
        for line in lines:
            write_line(sys.stderr, line)
        if self.engine_core is not None:
            engine_core.stop(self.engine_core)
        os._exit(status)

    def crash(self, why: str) -> None:
        """Die at once, like a segfault: no cleanup, the EngineCore child is left behind."""
        write_line(sys.stderr, f"Fatal Python error: fake crash ({why})")
        os._exit(1)

    def wait_signal(self, timeout: float) -> int | None:
        if timeout <= 0:
            return None
        sig = signal.sigtimedwait(EXIT_SIGNALS, timeout)
        # After SIGSTOP/SIGCONT, CPython can return a siginfo of garbage: only a real exit
        # signal counts, or a paused engine would shut down as if told to.
        signo = sig.si_signo if sig and sig.si_signo in EXIT_SIGNALS else None
        if signo is not None and "ignore-sigterm" in self.cfg["modes"]:
            vlog("WARNING", "api_server.py:1", f"ignoring {signal.Signals(signo).name} (fake ignore-sigterm)")
            return None
        return signo

    def graceful_exit(self, status: int = 0) -> None:
        ulog("Shutting down")
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        ulog("Waiting for application shutdown.")
        if self.engine_core is not None:
            engine_core.stop(self.engine_core)
        ulog("Application shutdown complete.")
        ulog(f"Finished server process [{os.getpid()}]")
        os._exit(status)

    def run(self) -> None:
        cfg = self.cfg
        modes = cfg["modes"]
        if "ignore-sigterm" in modes:  # until the mask below takes them synchronously
            for sig in EXIT_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        vlog("INFO", "api_server.py:1805", f"vLLM API server version {VERSION}")
        non_default = {k: cfg[k] for k in ("model", "host", "port", "max_model_len") if cfg[k] is not None}
        if cfg["served_model_names"] != [cfg["model"]]:
            non_default["served_model_name"] = cfg["served_model_names"]
        vlog("INFO", "utils.py:326", f"non-default args: {non_default}")
        if modes.get("long-line"):
            write_raw("x" * int(modes["long-line"]))
        sock = self.bind()
        self.spawn_engine_core()
        # From here on SIGTERM/SIGINT are taken synchronously by the main thread (and the
        # request threads started later inherit the blocked mask).
        signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)

        # Loading: the socket is bound but does not listen, so connections are refused.
        if not loading.load(cfg, self.engine_core, self.wait_signal):
            self.graceful_exit(0)
        if "exit-at-start" in modes or self.engine_core.poll() is not None:
            self.fail(
                [
                    _error("core.py:700", "EngineCore failed to start."),
                    "Traceback (most recent call last):",
                    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
                ]
            )
        loading.loaded(cfg)
        engine = self.serve(sock)
        self.watch(engine)

    def bind(self) -> socket.socket:
        host, port = self.cfg["host"], self.cfg["port"]
        where = f"{host or '0.0.0.0'}:{port}"
        if "port-in-use" in self.cfg["modes"]:
            self.fail([_error("api_server.py:1877", f"OSError: [Errno 98] Address already in use ({where})")])
        try:
            return bind_socket(host, port)
        except OSError as exc:
            errno_text = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)
            self.fail([_error("api_server.py:1877", f"OSError: {errno_text} ({where})")])
            raise  # not reached: fail() exits

    def spawn_engine_core(self) -> None:
        cfg = self.cfg
        self.engine_core = engine_core.start(ignore_term="ignore-sigterm" in cfg["modes"])
        if cfg["engine_pid_file"]:
            tmp = cfg["engine_pid_file"] + ".tmp"
            try:
                with open(tmp, "w") as fh:
                    fh.write(f"{self.engine_core.pid}\n")
                os.replace(tmp, cfg["engine_pid_file"])
            except OSError as exc:
                self.fail([f"ERROR fake_vllm: cannot write --fake-engine-pid-file: {exc}"])

    def serve(self, sock: socket.socket) -> Engine:
        host = self.cfg["host"]
        engine = Engine(self.cfg)
        ReadyFaults(self.cfg["modes"], self.crash).before_listening(engine)
        sock.listen(128)
        self.server = FakeServer(sock, self.cfg, engine, self.crash)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="http"
        ).start()
        shown_host = host if host is not None else "0.0.0.0"
        vlog("INFO", "api_server.py:1847", f"Starting vLLM API server on http://{shown_host}:{sock.getsockname()[1]}")
        ulog(f"Started server process [{os.getpid()}]")
        ulog("Waiting for application startup.")
        ulog("Application startup complete.")
        return engine

    def watch(self, engine: Engine) -> None:
        """Until told to stop, or the EngineCore died: the timed faults, SIGSTOP, the engine's death."""
        core = self.engine_core
        faults = ReadyFaults(self.cfg["modes"], self.crash)
        ready = time.monotonic()
        dead_since = None
        while True:
            if self.wait_signal(0.05) is not None:
                self.graceful_exit(0)
            since = time.monotonic() - ready
            faults.strike(since, engine)
            # A SIGSTOPped EngineCore stops the engine until SIGCONT, as real vLLM's does.
            stopped, state = engine_core.is_stopped(core.pid), engine.get_state()
            if stopped and state == "ready":
                engine.set_state("paused")
            elif not stopped and state == "paused":
                engine.set_state("ready")
            if dead_since is None:
                if faults.engine_death_due(since):
                    core.kill()
                    core.wait()
                if core.poll() is not None:
                    dead_since = time.monotonic()
                    engine.set_state("dead")
                    vlog(
                        "ERROR",
                        "core_client.py:564",
                        "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.",
                        sys.stderr,
                    )
                    vlog("ERROR", "async_llm.py:480", "AsyncLLM output_handler failed.", sys.stderr)
                    write_line(
                        sys.stderr,
                        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
                        "encountered an issue. See stack trace (above) for the "
                        "root cause.",
                    )
            elif time.monotonic() - dead_since >= DEATH_EXIT_DELAY:
                self.graceful_exit(0)


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        write_line(sys.stderr, f"usage: {PROG} [-h] [options] [model_tag]\n{PROG}: error: {exc}")
        sys.exit(2)
    if cfg["started_file"]:
        with open(cfg["started_file"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
    app = Main(cfg)
    try:
        app.run()
    except BaseException:
        if app.engine_core is not None:  # never leave the child behind on a bug of ours
            engine_core.stop(app.engine_core)
        raise
