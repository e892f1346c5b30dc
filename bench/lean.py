#!/usr/bin/env python3
"""Lean and quick (issue 14): every figure side by side in one run, and where the cost goes.

    .venv/bin/python bench/lean.py [--runs N] [--status-runs N] [--window S] [--json PATH]

As root, against a private real ``systemd --user`` (vllm_agent.testing.user_manager) and the
fake engine (agent/testing/fake_vllm.py), driving the real ``vllm-agent`` command:

1. the agent's own share of a start: ``vllm-agent --user start share`` (tests = []) wall time
   minus the engine's spawn ("engine started" in the launcher's log) -> first /health 200 (polled
   every 10 ms), split with systemd's InactiveExit/ExecMainStart/ActiveEnter timestamps; N runs.
   bench/real_vllm.py measures the same figure with real vLLM (there the engine takes ~30 s);
2. 16 ready fake deployments (``--fake-load-time 0.3``, default [health]), then the daemon
   (``vllm-agent.service``, i.e. ``vllm-agent run``): the launchers' and the daemon's RSS and USS
   (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup; the fake engines are not counted),
   and their idle CPU (utime + stime) over ``--window`` seconds;
3. ``vllm-agent --user status`` wall time as a subprocess with the daemon running and stopped
   (with ``--installed PATH``, also with that vllm-agent: a wheel installed into a venv of its own,
   as a packaged host runs it, without the dev venv's editable-install finder);
4. where the cost goes (bench/lean_costs.py): ``-X importtime`` profiles of ``start`` and both
   ``status`` paths (PYTHONPROFILEIMPORTTIME=1), of the launcher (split at the engine spawn) and
   the daemon as systemd runs them (an ExecStart drop-in of the bench's own, removed afterwards);
   each process's imports alone in a fresh interpreter (its wall-time and memory floor); each
   library alone and in a chain; what sets of libraries weigh.

The dev venv's test plugins are blocked in agent.toml: the figures are those of vllm-agent alone.

Only loopback traffic; every wait has a deadline; everything is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from harness.agent_cli import AGENT, FAKE_ENGINE, AgentCli, agent_env, write_tiny_model_dir  # noqa: E402
from harness.ports import agent_ports  # noqa: E402
from harness.processes import wait_for  # noqa: E402
from lean_costs import Profile, alone_costs, budgets, import_floor, import_memory, report, third_party_plugins  # noqa: E402
from real_vllm import health_ok  # noqa: E402 - the same /health probe as the real-vLLM bench
from recovery import CLK_TCK, cpu_busy, proc_cpu_ticks  # noqa: E402 - as the recovery bench reads them
from vllm_agent.testing.user_manager import UserManager  # noqa: E402

FLEET = 16
POLL = 0.01  # seconds between /health probes during a measured start
PROFILE_DROPIN = "90-lean-bench-importtime.conf"
LAUNCH_BEFORE = "vllm-agent launch, up to the engine spawn"
LAUNCH_AFTER = "vllm-agent launch, after the spawn"
# The profiles whose imports alone are timed (their floor), and the keys of those figures.
FLOORS = {
    "vllm-agent start": "floor_start",
    LAUNCH_BEFORE: "floor_launch",
    "vllm-agent status (no daemon)": "floor_status",
    "vllm-agent status (daemon)": "floor_status_daemon",
    "vllm-agent run (the daemon)": "floor_run",
}
# (key, figure, target text, target value or None for information, unit)
TARGETS: list[tuple[str, str, str, float | None, str]] = [
    ("share", "agent's own share of a start (fake engine)", "< 0.4 s", 0.4, "s"),
    ("share_cli", "  . CLI exec -> unit activating (InactiveExit)", "-", None, "s"),
    ("share_job", "  . activating -> launcher exec (ExecMainStart)", "-", None, "s"),
    ("share_launcher_resolved", '  . launcher exec -> "model resolved"', "-", None, "s"),
    ("share_launcher_engine", '  . "model resolved" -> "engine started"', "-", None, "s"),
    ("share_health_active", "  . first /health 200 -> unit active (ActiveEnter)", "-", None, "s"),
    ("share_active_exit", "  . unit active -> CLI exit", "-", None, "s"),
    ("floor_start", "  (CLI `start`'s imports alone, no work: its floor)", "-", None, "s"),
    ("floor_launch", "  (the launcher's imports up to the spawn, alone: its floor)", "-", None, "s"),
    ("share_wall", "  (CLI wall; engine spawn -> /health 200 is the rest)", "-", None, "s"),
    ("share_engine", "  (engine: spawn -> first /health 200)", "-", None, "s"),
    ("status_no_daemon", f"`status` without the daemon ({FLEET} deployments)", "< 150 ms", 0.150, "ms"),
    ("status_daemon", f"`status` with the daemon ({FLEET} deployments)", "< 50 ms", 0.050, "ms"),
    ("status_api", "  (the daemon's answer to GET /v1/status on its socket)", "-", None, "ms"),
    ("status_daemon_installed", "  (`status` with the daemon, --installed vllm-agent)", "< 50 ms", 0.050, "ms"),
    ("status_no_daemon_installed", "  (`status` without the daemon, --installed vllm-agent)", "< 150 ms", 0.150, "ms"),
    ("floor_installed", "  (floor: `python -c pass` of the --installed venv)", "-", None, "ms"),
    ("floor_status", "  (`status` without daemon: its imports alone)", "-", None, "ms"),
    ("floor_status_exit", "  (the same, with the interpreter's normal exit: its teardown)", "-", None, "ms"),
    ("floor_status_daemon", "  (`status` with daemon: its imports alone)", "-", None, "ms"),
    ("python_floor", "  (floor: `python -c pass` of this venv)", "-", None, "ms"),
    ("launcher_rss", f"launcher RSS (each of {FLEET})", "< 30 MB", 30, "MB"),
    ("launcher_uss", f"launcher USS (each of {FLEET})", "< 20 MB", 20, "MB"),
    ("launcher_imports_rss", "  (RSS of a python importing what the launcher imports)", "-", None, "MB"),
    ("launcher_imports_uss", "  (USS of the same)", "-", None, "MB"),
    ("launcher_cpu", f"launcher idle CPU (each of {FLEET})", "< 1 %", 1.0, "%"),
    ("launcher_cpu_mean", f"  (launchers' idle CPU, mean of {FLEET})", "< 1 %", 1.0, "%"),
    ("daemon_rss", f"daemon RSS, {FLEET} deployments (samples)", "< 35 MB", 35, "MB"),
    ("daemon_uss", f"daemon USS, {FLEET} deployments (samples)", "-", None, "MB"),
    ("daemon_imports_rss", "  (RSS of a python importing what the daemon imports)", "-", None, "MB"),
    ("daemon_imports_uss", "  (USS of the same)", "-", None, "MB"),
    ("daemon_cpu", f"daemon idle CPU, {FLEET} deployments", "< 1 %", 1.0, "%"),
    ("floor_run", "  (the daemon's imports alone, wall)", "-", None, "s"),
]


# Helpers ------------------------------------------------------------------------------------


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, USS) in MB from smaps_rollup; USS = Private_Clean + Private_Dirty."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return fields["Rss"] / 1024, (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


def load_line() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    busy = subprocess.run(["pgrep", "-fc", "pytest|bench/|vllm.entrypoints"], capture_output=True, text=True)
    return f"load average {load}, other test/bench processes {int(busy.stdout.strip() or 0) - 1}"


def iso_to_mono(stamp: str) -> float:
    """A launcher log timestamp (ISO) on this process's CLOCK_MONOTONIC."""
    wall = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return wall - (time.time() - time.monotonic())


def usec(value: str) -> float:
    return int(value) / 1e6


def events(text: str) -> dict[str, dict[str, Any]]:
    """The last of each launcher JSON event (``<N>{...}`` lines) in ``text``."""
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        start = line.find("{")
        if line.startswith("<") and 0 < start < 4:
            with contextlib.suppress(ValueError):
                record = json.loads(line[start:])
                found[record.get("event", "")] = record
    return found


# The environment -----------------------------------------------------------------------------


@dataclass
class Bench:
    manager: UserManager
    work: Path
    agent: AgentCli
    model_dir: Path
    ports: tuple[int, int]
    values: dict[str, list[float]] = field(default_factory=dict)
    profiles: list[Profile] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(AGENT), "--user", "--config-dir", str(self.agent.config_dir), *args],
            env=env or self.agent.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode not in (0, 3):  # 3: status saw something that needs an operator
            raise RuntimeError(f"vllm-agent {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done.stderr

    def deploy(self, name: str, port: int) -> None:
        self.agent.write_deployment(
            name, f'model = "{self.model_dir}"\nport = {port}\nargs = ["--fake-load-time", "0.3"]\ntests = []\n'
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        return self.manager.show(unit, *props)

    def wait_active(self, name: str, timeout: float = 120.0) -> dict[str, str]:
        def ready() -> dict[str, str] | None:
            state = self.show(f"vllm@{name}.service", "ActiveState", "MainPID")
            if state.get("ActiveState") == "failed":
                raise RuntimeError(f"vllm@{name} failed:\n{self.agent.log(name)[-3000:]}")
            return state if state.get("ActiveState") == "active" else None

        return wait_for(f"vllm@{name} active", ready, timeout, every=0.2)

    def log_text(self, name: str, offset: int = 0) -> str:
        path = self.agent.log_dir / f"{name}.log"
        with contextlib.suppress(OSError), path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
        return ""

    def log_size(self, name: str) -> int:
        with contextlib.suppress(OSError):
            return (self.agent.log_dir / f"{name}.log").stat().st_size
        return 0

    def add(self, key: str, *values: float) -> None:
        self.values.setdefault(key, []).extend(values)

    def profile_unit(self, unit: str, on: bool) -> None:
        """Run one unit's main process under ``python -X importtime``, through a drop-in of our own
        that repeats its ExecStart. Not PYTHONPROFILEIMPORTTIME: the engine would inherit it, and
        its lines would land in the same log."""
        dropins = self.manager.unit_dir / f"{unit}.d"
        path = dropins / PROFILE_DROPIN
        path.unlink(missing_ok=True)
        if on:
            template = unit.split("@", 1)[0] + "@.service" if "@" in unit else unit
            files = [self.manager.unit_dir / template, *sorted(dropins.glob("*.conf"))]
            lines = [line for f in files if f.exists() for line in f.read_text().splitlines()]
            exec_start = [line for line in lines if line.startswith("ExecStart=") and line != "ExecStart="][-1]
            dropins.mkdir(parents=True, exist_ok=True)
            path.write_text(f"[Service]\nExecStart=\nExecStart={sys.executable} -X importtime {exec_start[10:]}\n")
        self.manager.daemon_reload()


@contextlib.contextmanager
def bench_environment() -> Iterator[Bench]:
    work = Path(tempfile.mkdtemp(prefix="vllm-agent-lean-"))
    manager = None
    try:
        manager = UserManager.boot()
        ports = agent_ports(40)
        config_dir, state_dir, log_dir = work / "conf", work / "state", work / "logs"
        config_dir.mkdir()
        (config_dir / "agent.toml").write_text(
            f"port_range = [{ports[0]}, {ports[1]}]\n"
            f'unit_dir = "{manager.unit_dir}"\nstate_dir = "{state_dir}"\nlog_dir = "{log_dir}"\n'
            f'socket = "{work / "agent.sock"}"\n'
            f"[engine]\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(FAKE_ENGINE))}]\n"
            "[restart]\nmin_delay = 0.2\n[startup]\ntimeout = 120\n"  # [health]: the defaults, as shipped
            f"[plugins]\nblock = {json.dumps(third_party_plugins())}\n"
        )
        agent = AgentCli(config_dir=config_dir, env=agent_env(manager.env), log_dir=log_dir, state_dir=state_dir)
        bench = Bench(manager, work, agent, write_tiny_model_dir(work / "models" / "tiny"), ports)
        bench.cli("init")
        manager.daemon_reload()
        yield bench
    finally:
        if manager is not None:
            try:
                manager.systemctl("stop", "vllm-agent.service", check=False, timeout=60)
                manager.stop_all("vllm@*")
            except Exception as err:  # noqa: BLE001 - close() below still stops everything
                print(f"cleanup: stopping units: {err}", file=sys.stderr)
            manager.close()
        shutil.rmtree(work, ignore_errors=True)


# 1. The agent's own share of a start -----------------------------------------------------------


def one_start(bench: Bench, name: str, port: int) -> None:
    offset = bench.log_size(name)
    command = [str(AGENT), "--user", "--config-dir", str(bench.agent.config_dir), "start", name]
    out = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: the CLI never blocks on us
    began = time.monotonic()
    cli = subprocess.Popen(command, env=bench.agent.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    first_200 = None
    deadline = began + 120
    while cli.poll() is None and time.monotonic() < deadline:
        if first_200 is None and health_ok(port):
            first_200 = time.monotonic()
        time.sleep(POLL)
    if cli.poll() is None:
        cli.kill()
    ended = time.monotonic()
    code = cli.wait()
    out.seek(0)
    if code != 0:
        raise RuntimeError(f"vllm-agent start exited {code}:\n{out.read().decode(errors='replace')}")
    found = wait_for("the 'ready' event", lambda: (e := events(bench.log_text(name, offset))).get("ready") and e, 10)
    unit = bench.show(
        f"vllm@{name}.service",
        "InactiveExitTimestampMonotonic",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )
    job, exec_main = usec(unit["InactiveExitTimestampMonotonic"]), usec(unit["ExecMainStartTimestampMonotonic"])
    active = usec(unit["ActiveEnterTimestampMonotonic"])
    resolved = iso_to_mono(found["model resolved"]["timestamp"])
    engine = iso_to_mono(found["engine started"]["timestamp"])
    first_200 = first_200 or iso_to_mono(found["ready"]["timestamp"])  # the CLI ended between two probes
    wall = ended - began
    bench.add("share", wall - (first_200 - engine))
    bench.add("share_wall", wall)
    bench.add("share_engine", first_200 - engine)
    bench.add("share_cli", job - began)
    bench.add("share_job", exec_main - job)
    bench.add("share_launcher_resolved", resolved - exec_main)
    bench.add("share_launcher_engine", engine - resolved)
    bench.add("share_health_active", active - first_200)
    bench.add("share_active_exit", ended - active)
    print(f"  start: wall {wall:.3f} s, engine {first_200 - engine:.3f} s, agent {wall - first_200 + engine:.3f} s")


def fig_start_share(bench: Bench, runs: int) -> None:
    name, port = "share", bench.ports[0] + FLEET
    bench.deploy(name, port)
    # The drop-in and daemon-reload once, unmeasured: every measured start finds its unit current.
    bench.cli("start", name, "--no-wait")
    bench.wait_active(name)
    bench.cli("stop", name)
    for _ in range(runs):
        one_start(bench, name, port)
        bench.cli("stop", name)
    # One more start, profiled: the CLI's imports (start) and the launcher's, as systemd runs it.
    bench.profile_unit(f"vllm@{name}.service", True)
    offset = bench.log_size(name)
    stderr = bench.cli("start", name, env={**bench.agent.env, "PYTHONPROFILEIMPORTTIME": "1"})
    bench.cli("stop", name)
    bench.profiles.append(Profile.parse("vllm-agent start", stderr))
    # The log interleaves the launcher's events and its import lines in time order: split at the spawn.
    before, spawn, after = bench.log_text(name, offset).partition('"event": "engine started"')
    bench.profiles.append(Profile.parse(LAUNCH_BEFORE, before))
    bench.profiles.append(Profile.parse(LAUNCH_AFTER, spawn + after))
    bench.profile_unit(f"vllm@{name}.service", False)
    bench.cli("remove", name)


# 2 and 3. Launchers and daemon at rest, status ---------------------------------------------------


def fig_fleet(bench: Bench, window: float, status_runs: int, installed: Path | None = None) -> None:
    names = [f"f{i:02d}" for i in range(FLEET)]
    for i, name in enumerate(names):
        bench.deploy(name, bench.ports[0] + i)
        bench.cli("start", name, "--no-wait")
    launchers = [int(bench.wait_active(name, timeout=300)["MainPID"]) for name in names]
    bench.manager.systemctl("start", "vllm-agent.service", timeout=120)
    daemon = int(bench.show("vllm-agent.service", "MainPID")["MainPID"])
    time.sleep(5.0)  # settle: the daemon's first reconcile and status tick are not "idle"
    for pid in launchers:
        rss, uss = memory_mb(pid)
        bench.add("launcher_rss", rss)
        bench.add("launcher_uss", uss)
    before = {pid: proc_cpu_ticks(pid) for pid in [daemon, *launchers]}
    busy0, started = cpu_busy(), time.monotonic()
    while time.monotonic() - started < window:  # the daemon's memory, sampled through the window
        rss, uss = memory_mb(daemon)
        bench.add("daemon_rss", rss)
        bench.add("daemon_uss", uss)
        time.sleep(min(5.0, max(0.0, window - (time.monotonic() - started))))
    took, busy1 = time.monotonic() - started, cpu_busy()
    pct = {pid: (proc_cpu_ticks(pid) - ticks) / CLK_TCK / took * 100 for pid, ticks in before.items()}
    bench.add("daemon_cpu", pct[daemon])
    bench.add("launcher_cpu", *(pct[pid] for pid in launchers))
    bench.add("launcher_cpu_mean", statistics.mean(pct[pid] for pid in launchers))
    bench.busy.append((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100)
    if int(bench.show("vllm-agent.service", "MainPID")["MainPID"]) != daemon:
        raise RuntimeError("the daemon restarted during the idle window")
    print(f"  idle window {took:.0f} s: machine {bench.busy[-1]:.0f}% busy")

    bench.add("status_daemon", *status_times(bench, "daemon", status_runs))
    if installed:
        bench.add("status_daemon_installed", *status_times(bench, "daemon", status_runs, installed))
    bench.add("status_api", *(api_time(bench.work / "agent.sock") for _ in range(status_runs)))
    bench.manager.systemctl("stop", "vllm-agent.service", timeout=60)
    bench.add("status_no_daemon", *status_times(bench, "systemd", status_runs))
    if installed:
        bench.add("status_no_daemon_installed", *status_times(bench, "systemd", status_runs, installed))
        python = installed.parent / "python"
        bench.add("floor_installed", *(timed([str(python), "-c", "pass"], bench.agent.env) for _ in range(status_runs)))
    floor = [timed([sys.executable, "-c", "pass"], bench.agent.env) for _ in range(status_runs)]
    bench.add("python_floor", *floor)

    # Profiles of both status paths and of the daemon as systemd runs it.
    profiled = {**bench.agent.env, "PYTHONPROFILEIMPORTTIME": "1"}
    bench.profiles.append(Profile.parse("vllm-agent status (no daemon)", bench.cli("status", env=profiled)))
    bench.profile_unit("vllm-agent.service", True)
    offset = bench.log_size("vllm-agent")
    bench.manager.systemctl("start", "vllm-agent.service", timeout=120)
    bench.profiles.append(Profile.parse("vllm-agent status (daemon)", bench.cli("status", env=profiled)))
    bench.manager.systemctl("stop", "vllm-agent.service", timeout=60)
    bench.profiles.append(Profile.parse("vllm-agent run (the daemon)", bench.log_text("vllm-agent", offset)))
    bench.profile_unit("vllm-agent.service", False)
    for name in names:
        bench.cli("remove", name)


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
    took = time.perf_counter() - began
    if done.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return took


def api_time(sock: Path) -> float:
    """Seconds for the daemon's answer to GET /v1/status over its socket: its part of `status`."""
    began = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5.0)
        client.connect(str(sock))
        client.sendall(b"GET /v1/status HTTP/1.1\r\nHost: vllm-agent\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"the daemon answered {answer[:80]!r}")
    return time.perf_counter() - began


def status_times(bench: Bench, source: str, runs: int, agent: Path = AGENT) -> list[float]:
    command = [str(agent), "--user", "--config-dir", str(bench.agent.config_dir), "status"]
    answer = subprocess.run([*command, "--json"], env=bench.agent.env, capture_output=True, text=True, timeout=60)
    if not answer.stdout.startswith("{") or json.loads(answer.stdout).get("source") != source:
        raise RuntimeError(f"status did not answer from {source}: {answer.stdout[:300]} {answer.stderr[-300:]}")
    return [timed(command, bench.agent.env) for _ in range(runs)]


# The table -------------------------------------------------------------------------------------------


def table(values: dict[str, list[float]]) -> str:
    scale = {"s": 1.0, "ms": 1000.0, "MB": 1.0, "%": 1.0}
    lines = [
        "| figure | target | median | min | max | n | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, label, target_text, target, unit in TARGETS:
        got = values.get(key)
        if not got:
            continue
        factor = scale[unit]
        med = statistics.median(got)
        verdict = "" if target is None else ("**pass**" if med * factor < target * factor else "**FAIL**")
        digits = 3 if unit == "s" else 1
        cells = [f"{round(v * factor, digits) + 0.0:.{digits}f}" for v in (med, min(got), max(got))]  # no -0.000
        lines.append(
            f"| {label} | {target_text} | {' | '.join(f'{c} {unit}' for c in cells)} | {len(got)} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured starts (default 5)")
    parser.add_argument("--status-runs", type=int, default=10, help="status calls per path (default 10)")
    parser.add_argument("--window", type=float, default=25.0, help="idle CPU window in seconds (default 25)")
    parser.add_argument("--json", type=Path, help="also write the raw figures and profiles here")
    parser.add_argument(
        "--installed",
        type=Path,
        help="also time `status` with this vllm-agent: one installed from the wheel into a venv of its own,"
        " without the editable install's import finder, as a packaged host runs it",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.status_runs < 1 or not 5 <= args.window <= 120:
        parser.error("--runs and --status-runs >= 1, --window between 5 and 120")

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # runs the finally blocks: units stopped, manager closed

    signal.signal(signal.SIGTERM, terminate)
    started = dt.datetime.now().astimezone()
    loads = [load_line()]
    print(f"vllm-agent lean bench, {started:%Y-%m-%d %H:%M %Z}; nproc {os.cpu_count()}; {loads[0]}", flush=True)
    with bench_environment() as bench:
        print(f"1. the agent's own share of a start ({args.runs} runs)", flush=True)
        fig_start_share(bench, args.runs)
        loads.append(load_line())
        print(f"2/3. {FLEET} deployments: launchers, daemon, status", flush=True)
        fig_fleet(bench, args.window, args.status_runs, args.installed)
        loads.append(load_line())
        values, profiles, busy = bench.values, bench.profiles, bench.busy
    print("4. each library alone; each process's imports alone", flush=True)
    env = agent_env({})
    alone, weights = alone_costs(sys.executable, env), budgets(sys.executable, env)
    for profile in profiles:
        if profile.what in FLOORS:
            values[FLOORS[profile.what]] = import_floor(sys.executable, env, profile, args.status_runs)
        if profile.what == "vllm-agent status (no daemon)":  # what the interpreter's exit adds to a command
            values["floor_status_exit"] = import_floor(sys.executable, env, profile, args.status_runs, False)
    by_name = {profile.what: profile for profile in profiles}
    for key, names in (("launcher", (LAUNCH_BEFORE, LAUNCH_AFTER)), ("daemon", ("vllm-agent run (the daemon)",))):
        rss, uss = import_memory(sys.executable, env, [by_name[name] for name in names])
        values[f"{key}_imports_rss"], values[f"{key}_imports_uss"] = [rss], [uss]
    loads.append(load_line())
    took = (dt.datetime.now().astimezone() - started).total_seconds()
    print()
    print(
        f"{started:%Y-%m-%d %H:%M %Z}, {took:.0f} s; nproc {os.cpu_count()}; machine {busy[0]:.0f}% busy in "
        f"the idle window; at start, after 1, after 2/3, at end: {' | '.join(loads)}"
    )
    print()
    print(table(values))
    print()
    print(report(profiles, alone, weights))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "loads": loads,
                    "busy": busy,
                    "values": values,
                    "profiles": [p.to_json() for p in profiles],
                    "alone": alone,
                    "budgets": weights,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
