#!/usr/bin/env python3
"""What vllm-agent adds to starting real vLLM, measured side by side with bare vLLM (issue 6).

    .venv/bin/python bench/real_vllm.py [--runs N] [--no-quiet-wait] [--json PATH]

On the tiny model (scripts/build_tiny_model.py, seed 0) with the real-vLLM tier's engine flags
(--max-model-len 256 --enforce-eager --dtype bfloat16; HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1),
in rounds a, b, c, d (N rounds, so drift in machine load hits every figure alike):

  a  bare: spawn `python -m vllm.entrypoints.openai.api_server ...` -> first 200 on /health
     (polled every 20 ms), then SIGTERM (process group SIGKILLed after, if anything is left);
  b  `vllm-agent --user start tiny` with `tests = []`: the CLI's wall time (it returns when the
     unit is active), and the agent's own share of it = wall - (engine spawn -> first /health
     200); the same 20 ms /health poller runs as in (a); then `vllm-agent stop tiny`;
  c  the same with the default post-start tests (no `tests` key: openai-smoke runs);
  d  on c's ready deployment: SIGKILL the API server (the launcher's child, from
     /proc/MAINPID/task/MAINPID/children) -> unit active again with NRestarts + 1.

Where the agent's time goes comes from systemd's own monotonic timestamps
(InactiveExit/ExecMainStart/ActiveEnter) and the launcher's JSON log events ("engine started",
"ready"), all on CLOCK_MONOTONIC or converted to it.

Before measuring it waits (at most 25 min, polling every 20 s) for a quiet machine: no
`python -m pytest`, no bench/recovery.py, no vllm.entrypoints process. Everything it starts is
stopped at the end, also on failure: units, the private user manager, bare vLLM.
Only loopback traffic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.agent_cli import agent_env  # noqa: E402
from harness.real_vllm import MODEL_DIR, VLLM_PYTHON, deployment_toml  # noqa: E402
from vllm_agent.testing.user_manager import UserManager  # noqa: E402

AGENT = Path(sys.executable).parent / "vllm-agent"
ENGINE_FLAGS = ["--max-model-len", "256", "--enforce-eager", "--dtype", "bfloat16"]
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
NAME = "tiny"
POLL = 0.02  # seconds between /health probes, bare and agent alike
START_DEADLINE = 600.0  # one start on a loaded 2-core machine
STOP_DEADLINE = 120.0
QUIET_MAX = 25 * 60.0
QUIET_EVERY = 20.0
PORTS = range(26700, 26800)  # clear of the tiers' (23000+) and other benches' (24100+)


class BenchError(RuntimeError):
    pass


# --- small helpers ---------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def health_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def free_ports(count: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise BenchError(f"no {count} free ports in {PORTS.start}-{PORTS.stop - 1}")


def wall_to_mono(iso: str) -> float:
    """A launcher log timestamp (ISO, UTC) on this process's CLOCK_MONOTONIC."""
    wall = dt.datetime.fromisoformat(iso).timestamp()
    return wall - (time.time() - time.monotonic())


def usec(value: str) -> float | None:
    """A systemd *TimestampMonotonic property (µs) in seconds; None when unset."""
    return int(value) / 1e6 if value and value != "0" else None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def busy_processes() -> list[str]:
    found = []
    for pattern in ("python -m pytest", "bench/recovery.py", "vllm.entrypoints"):
        done = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False)
        found += [line for line in done.stdout.splitlines() if line.split(" ", 1)[0] != str(os.getpid())]
    return found


def wait_until_quiet(limit: float) -> tuple[bool, float]:
    started = time.monotonic()
    while True:
        busy = busy_processes()
        waited = time.monotonic() - started
        if not busy:
            return True, waited
        if waited + QUIET_EVERY > limit:
            print(f"[quiet] still busy after {waited:.0f}s, measuring anyway: {busy}", flush=True)
            return False, waited
        print(f"[quiet] {waited:4.0f}s load {loadavg()}: waiting for {len(busy)}: {busy[:3]}", flush=True)
        time.sleep(QUIET_EVERY)


def _read_all(stream: Any) -> str:
    with stream:
        stream.seek(0)
        return stream.read().decode(errors="replace")


def launcher_events(text: str) -> list[dict[str, Any]]:
    """The launcher's JSON log lines (`<N>{...}`) in the unit's log."""
    events = []
    for line in text.splitlines():
        if line.startswith("<") and ">{" in line[:4]:
            try:
                events.append(json.loads(line[line.index(">") + 1 :]))
            except ValueError:
                pass
    return events


def last_event(events: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = [event for event in events if event.get("event") == name]
    return found[-1] if found else None


# --- the measurements ------------------------------------------------------------------------


class Bench:
    def __init__(self, workdir: Path, model: Path) -> None:
        self.workdir = workdir
        self.model = model
        self.bare_port, self.agent_port = free_ports(2)
        self.bare_procs: list[subprocess.Popen[bytes]] = []
        self.manager: UserManager | None = None
        self.config_dir = workdir / "conf"
        self.log_path = workdir / "logs" / f"{NAME}.log"
        self.env: dict[str, str] = {}

    # setup / teardown

    def setup_agent(self) -> None:
        self.manager = UserManager.boot(self.workdir)
        self.env = agent_env(self.manager.env)
        state_dir, log_dir = self.workdir / "state", self.workdir / "logs"
        self.config_dir.mkdir()
        # The real-vLLM tier's agent.toml (tests/vllm/conftest.py), with this bench's port.
        (self.config_dir / "agent.toml").write_text(
            f'port_range = [{self.agent_port}, {self.agent_port}]\nunit_dir = "{self.manager.unit_dir}"\n'
            f'state_dir = "{state_dir}"\nlog_dir = "{log_dir}"\nsocket = "{self.workdir / "agent.sock"}"\n'
            f"[engine]\ncommand = {json.dumps([str(VLLM_PYTHON), '-m', 'vllm.entrypoints.openai.api_server'])}\n"
            "[startup]\ntimeout = 600\n"
            "[restart]\nmax_restarts = 3\nwindow = 600\nmin_delay = 1\n"
            '[health]\nchecks = ["http", "completion", "metrics-stall"]\ninterval = 2\ntimeout = 15\n'
            "failure_threshold = 3\n"
        )
        self.agent("init", timeout=60)
        self.write_deployment(tests=False)
        # Write the drop-in and daemon-reload once, outside the measurements: every measured
        # start then finds its unit current, as any start but the first after an edit does.
        began = time.monotonic()
        self.agent("start", NAME, "--no-wait", timeout=120)
        self.first_prepare = time.monotonic() - began
        self.agent("stop", NAME, timeout=STOP_DEADLINE)

    def write_deployment(self, *, tests: bool) -> None:
        head = f"port = {self.agent_port}\n" + ("" if tests else "tests = []\n")
        path = self.config_dir / "models.d" / f"{NAME}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + deployment_toml(self.model))

    def cleanup(self) -> None:
        for proc in self.bare_procs:
            self.kill_group(proc)
        if self.manager is not None:
            try:
                self.manager.stop_all("vllm@*")
            except Exception as err:  # noqa: BLE001 - keep cleaning
                print(f"[cleanup] stopping units: {err}", file=sys.stderr)
            self.manager.close()
            self.manager = None

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def agent(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(AGENT), "--user", "--config-dir", str(self.config_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise BenchError(f"vllm-agent {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def unit(self) -> dict[str, str]:
        assert self.manager is not None
        return self.manager.show(
            f"vllm@{NAME}.service",
            "ActiveState",
            "SubState",
            "NRestarts",
            "MainPID",
            "InactiveExitTimestampMonotonic",
            "ExecMainStartTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
            "ActiveExitTimestampMonotonic",
        )

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log_event(self, offset: int, name: str, deadline: float) -> tuple[list[dict[str, Any]], str]:
        while True:
            text = self.log_since(offset)
            events = launcher_events(text)
            if last_event(events, name) is not None:
                return events, text
            if time.monotonic() > deadline:
                raise BenchError(f"no '{name}' event in {self.log_path}:\n{text[-3000:]}")
            time.sleep(0.05)

    # (a)

    def bare(self, run: int) -> dict[str, float]:
        argv = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model), "--served-model-name", NAME,
            "--host", "127.0.0.1", "--port", str(self.bare_port), *ENGINE_FLAGS,
        ]  # fmt: skip
        log = open(self.workdir / f"bare-{run}.log", "wb")  # noqa: SIM115 - closed below
        try:
            began = time.monotonic()
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **ENGINE_ENV},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.bare_procs.append(proc)
            deadline = began + START_DEADLINE
            while not health_ok(self.bare_port):
                if proc.poll() is not None:
                    raise BenchError(f"bare vLLM exited {proc.returncode}; see {log.name}")
                if time.monotonic() > deadline:
                    raise BenchError(f"bare vLLM not healthy after {START_DEADLINE:g}s; see {log.name}")
                time.sleep(POLL)
            ready = time.monotonic() - began
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            stop = time.monotonic() - stopping
            self.kill_group(proc)  # the group's leftovers, if any (and the server if it hung)
            self.bare_procs.remove(proc)
            return {"a_bare_start": ready, "a_bare_stop": stop}
        finally:
            log.close()

    # (b) and (c)

    def agent_start(self, *, tests: bool) -> dict[str, float]:
        key = "c" if tests else "b"
        self.write_deployment(tests=tests)
        offset = self.log_size()
        command = [str(AGENT), "--user", "--config-dir", str(self.config_dir), "start", NAME]
        began = time.monotonic()
        # Files, not pipes: a CLI that writes more than a pipe holds must not block on us.
        out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        cli = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL, stdout=out_file, stderr=err_file)
        watchdog = threading.Timer(START_DEADLINE, cli.kill)
        watchdog.start()
        try:
            first_200 = None
            while cli.poll() is None:
                if health_ok(self.agent_port):
                    first_200 = time.monotonic()
                    break
                time.sleep(POLL)
            cli.wait()  # blocks in waitpid: the exit is seen at once
            ended = time.monotonic()
        finally:
            watchdog.cancel()
        out, err = (_read_all(stream) for stream in (out_file, err_file))
        if cli.returncode != 0:
            tail = self.log_since(offset)[-3000:]
            raise BenchError(f"vllm-agent start exited {cli.returncode}:\n{out}\n{err}\n{tail}")
        events, text = self.wait_log_event(offset, "ready", time.monotonic() + 10)
        unit = self.unit()
        engine_started = wall_to_mono(last_event(events, "engine started")["timestamp"])  # type: ignore[index]
        ready_logged = wall_to_mono(last_event(events, "ready")["timestamp"])  # type: ignore[index]
        if first_200 is None:  # the CLI ended between two probes: fall back on the launcher's view
            first_200 = ready_logged
        job = usec(unit["InactiveExitTimestampMonotonic"]) or began
        exec_main = usec(unit["ExecMainStartTimestampMonotonic"]) or job
        active = usec(unit["ActiveEnterTimestampMonotonic"]) or ready_logged
        wall = ended - began
        engine = first_200 - engine_started
        figures = {
            f"{key}_cli_wall": wall,
            f"{key}_engine": engine,
            f"{key}_agent_overhead": wall - engine,
            f"{key}_cli_to_job": job - began,
            f"{key}_job_to_launcher": exec_main - job,
            f"{key}_launcher_to_engine": engine_started - exec_main,
            f"{key}_health_to_active": active - first_200,
            f"{key}_active_to_cli_exit": ended - active,
            f"{key}_log_engine_to_ready": ready_logged - engine_started,
        }
        if "Application startup complete" not in text:
            print(f"  [{key}] note: no 'Application startup complete' in the unit's log", flush=True)
        return figures

    def agent_stop(self, key: str) -> dict[str, float]:
        began = time.monotonic()
        self.agent("stop", NAME, timeout=STOP_DEADLINE)
        return {f"{key}_agent_stop": time.monotonic() - began}

    # (d)

    def sigkill_server(self) -> dict[str, float]:
        before = self.unit()
        if before["ActiveState"] != "active":
            raise BenchError(f"(d) needs a ready deployment, unit is {before}")
        launcher, restarts = int(before["MainPID"]), int(before["NRestarts"])
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        servers = [int(pid) for pid in children if "vllm.entrypoints.openai.api_server" in cmdline(int(pid))]
        if len(servers) != 1:
            raise BenchError(f"expected one API server below launcher {launcher}, found {children}")
        offset = self.log_size()
        killed = time.monotonic()
        os.kill(servers[0], signal.SIGKILL)
        deadline = killed + START_DEADLINE
        first_200 = None
        while first_200 is None:  # the old server answers no more once it is dead
            if health_ok(self.agent_port):
                first_200 = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise BenchError("(d) no /health 200 after the SIGKILL")
            time.sleep(POLL)
        events, _ = self.wait_log_event(offset, "ready", deadline)
        while True:
            unit = self.unit()
            if unit["ActiveState"] == "active" and int(unit["NRestarts"]) == restarts + 1:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"(d) unit not active with NRestarts {restarts + 1}: {unit}")
            time.sleep(0.2)
        active = usec(unit["ActiveEnterTimestampMonotonic"])
        exec_main = usec(unit["ExecMainStartTimestampMonotonic"])
        left = usec(unit["ActiveExitTimestampMonotonic"])
        engine_started = wall_to_mono(last_event(events, "engine started")["timestamp"])  # type: ignore[index]
        assert active and exec_main and left
        return {
            "d_kill_to_active": active - killed,
            "d_kill_to_unit_left_active": left - killed,
            "d_left_active_to_new_launcher": exec_main - left,
            "d_launcher_to_engine": engine_started - exec_main,
            "d_engine": first_200 - engine_started,
            "d_health_to_active": active - first_200,
        }


# --- report ----------------------------------------------------------------------------------

ROWS = [
    ("a_bare_start", "(a) bare vLLM: spawn -> first /health 200"),
    ("b_cli_wall", "(b) `vllm-agent start`, tests = []: CLI wall"),
    ("b_engine", "(b) engine: spawn -> first /health 200"),
    ("b_agent_overhead", "(b) **agent's own share** = wall - engine"),
    ("b_cli_to_job", "(b) . CLI exec -> unit activating (InactiveExit)"),
    ("b_job_to_launcher", "(b) . activating -> launcher exec (ExecMainStart)"),
    ("b_launcher_to_engine", '(b) . launcher exec -> "engine started"'),
    ("b_health_to_active", "(b) . first /health 200 -> unit active (ActiveEnter)"),
    ("b_active_to_cli_exit", "(b) . unit active -> CLI exit"),
    ("b_log_engine_to_ready", '(b) log: "engine started" -> "ready"'),
    ("c_cli_wall", "(c) `vllm-agent start`, default tests: CLI wall"),
    ("c_engine", "(c) engine: spawn -> first /health 200"),
    ("c_agent_overhead", "(c) agent's own share = wall - engine"),
    ("c_cli_to_job", "(c) . CLI exec -> unit activating"),
    ("c_job_to_launcher", "(c) . activating -> launcher exec"),
    ("c_launcher_to_engine", '(c) . launcher exec -> "engine started"'),
    ("c_health_to_active", "(c) . first /health 200 -> active (openai-smoke runs here)"),
    ("c_active_to_cli_exit", "(c) . unit active -> CLI exit"),
    ("d_kill_to_active", "(d) SIGKILL API server -> unit active again (NRestarts+1)"),
    ("d_kill_to_unit_left_active", "(d) . SIGKILL -> unit leaves active (launcher exits)"),
    ("d_left_active_to_new_launcher", "(d) . -> new launcher exec (RestartSec=1s)"),
    ("d_launcher_to_engine", '(d) . new launcher exec -> "engine started"'),
    ("d_engine", "(d) . engine: spawn -> first /health 200"),
    ("d_health_to_active", "(d) . first /health 200 -> active (openai-smoke runs here)"),
    ("a_bare_stop", "(a) bare stop: SIGTERM -> exit"),
    ("b_agent_stop", "(b) `vllm-agent stop` wall"),
    ("c_agent_stop", "(d) `vllm-agent stop` wall, after the restart"),
]


def _s(seconds: float) -> str:
    return f"{round(seconds, 2) + 0.0:.2f}"  # no "-0.00" for timestamps taken in the same instant


def table(results: list[dict[str, float]]) -> str:
    lines = ["| figure | median s | min s | max s | runs s |", "| --- | ---: | ---: | ---: | --- |"]

    def values(key: str) -> list[float]:
        return [run[key] for run in results if key in run]

    for key, label in ROWS:
        got = values(key)
        if not got:
            continue
        runs = ", ".join(f"{_s(v)}" for v in got)
        lines.append(f"| {label} | {_s(statistics.median(got))} | {_s(min(got))} | {_s(max(got))} | {runs} |")
    a, b, c = values("a_bare_start"), values("b_cli_wall"), values("c_cli_wall")
    if a and b:
        adds = statistics.median(b) - statistics.median(a)
        lines.append(f"| **agent adds** = median(b) - median(a) | {adds:.2f} | | | |")
    if a and c:
        adds = statistics.median(c) - statistics.median(a)
        lines.append(f"| agent adds with tests = median(c) - median(a) | {adds:.2f} | | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-quiet-wait", action="store_true", help="measure at once (for debugging)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if not AGENT.exists():
        print(f"no vllm-agent at {AGENT}: run with the agent venv's python (.venv/bin/python)", file=sys.stderr)
        return 2
    if not VLLM_PYTHON.exists():
        print(f"no vLLM at {VLLM_PYTHON}: run scripts/install-vllm", file=sys.stderr)
        return 2
    built = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "scripts" / "build_tiny_model.py"), str(MODEL_DIR), "--seed", "0"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        print(f"building the tiny model failed:\n{built.stderr}", file=sys.stderr)
        return 2
    model = Path(built.stdout.strip().splitlines()[-1])

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)

    quiet, waited = (True, 0.0) if args.no_quiet_wait else wait_until_quiet(QUIET_MAX)
    workdir = Path(tempfile.mkdtemp(prefix="bench-real-vllm-"))
    bench = Bench(workdir, model)
    results: list[dict[str, float]] = []
    loads = [loadavg()]
    started_at = dt.datetime.now().astimezone()
    try:
        bench.setup_agent()
        print(
            f"ports: bare {bench.bare_port}, agent {bench.agent_port}; model {model}; "
            f"first start --no-wait (drop-in + daemon-reload, not measured) {bench.first_prepare:.2f}s",
            flush=True,
        )
        for run in range(1, args.runs + 1):
            figures: dict[str, float] = {}
            print(f"[run {run}/{args.runs}] load {loadavg()}", flush=True)
            figures |= bench.bare(run)
            print(f"  a bare {figures['a_bare_start']:.2f}s", flush=True)
            figures |= bench.agent_start(tests=False)
            figures |= bench.agent_stop("b")
            print(
                f"  b agent {figures['b_cli_wall']:.2f}s (engine {figures['b_engine']:.2f}s, "
                f"agent {figures['b_agent_overhead']:.2f}s)",
                flush=True,
            )
            figures |= bench.agent_start(tests=True)
            print(
                f"  c agent+tests {figures['c_cli_wall']:.2f}s (engine {figures['c_engine']:.2f}s, "
                f"agent {figures['c_agent_overhead']:.2f}s)",
                flush=True,
            )
            figures |= bench.sigkill_server()
            print(f"  d SIGKILL -> active {figures['d_kill_to_active']:.2f}s", flush=True)
            figures |= bench.agent_stop("c")
            results.append(figures)
            loads.append(loadavg())
    finally:
        bench.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        f"{started_at:%Y-%m-%d %H:%M %Z}; nproc {os.cpu_count()}; runs {args.runs}; "
        f"quiet {'yes' if quiet else 'NO'} after waiting {waited:.0f}s; load average per round: {' | '.join(loads)}"
    )
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "loads": loads, "quiet": quiet}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
