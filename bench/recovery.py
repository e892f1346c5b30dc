#!/usr/bin/env python3
"""Recovery and daemon benchmark (issue 4): how fast the agent notices and heals, what it costs.

Runs against a private, real ``systemd --user`` manager (agent/testing/user_manager.py) and the
fake engine (agent/testing/fake_vllm/), driving the real ``vllm-agent`` CLI like an operator:

1. engine death -> the agent knows: SIGKILL the engine (the launcher's child) of a ready
   deployment; until the launcher recorded it (state file ``phase: failed``, its ``since``) and
   until the daemon recorded the ``restarted`` transition (history jsonl ``at``);
2. hang -> restart: ``--fake-mode hang-after:1``, health interval 1, timeout 1, threshold 2;
   from the hang (the engine's first /health 200, seen by polling every 5 ms, + 1 s) to the
   unit's NRestarts increment (seen over D-Bus);
3. ready gap: from the engine's first /health 200 to the unit being active (systemd's own
   ActiveEnterTimestamp, and the D-Bus signal as seen here), without and with post-start tests;
4. the daemon's RSS and idle CPU with 1, 16 and 64 ready deployments (``--quick``: 1 and 16),
   and one launcher's RSS;
5. ``vllm-agent status`` wall time with the daemon running and stopped.

Usage (as root, like the e2e tests): ``.venv/bin/python bench/recovery.py [--quick] [--keep]``.
Only loopback traffic; every wait has a deadline; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import UserManager  # noqa: E402
from harness.agent_cli import FAKE_ENGINE, AgentCli, agent_env, write_tiny_model_dir  # noqa: E402

T = TypeVar("T")
PORTS = (24000, 24199)
FLEET_PORT = 24100  # fleet deployment i listens on FLEET_PORT + i
PROBE_EVERY = 0.005  # seconds between /health probes and state-file reads
CLK_TCK = os.sysconf("SC_CLK_TCK")


# Helpers ------------------------------------------------------------------------------------


def wait_for(what: str, condition: Callable[[], T], timeout: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def secs(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def med_max(values: list[float], fmt: Callable[[float | None], str] = ms) -> str:
    if not values:
        return "n/a"
    return f"median {fmt(statistics.median(values))}, max {fmt(max(values))} (n={len(values)})"


def parse_iso(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def agent_events(log: Path, offset: int, event: str) -> list[dict[str, Any]]:
    """The launcher's JSON log lines (``<N>{...}``) with ``"event": event`` after ``offset``."""
    found = []
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read().decode(errors="replace")
    except OSError:
        return found
    for line in data.splitlines():
        start = line.find("{")
        if start < 0 or f'"event": "{event}"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def engine_pid(launcher: int) -> int:
    """The engine is the launcher's (only) child."""
    for task in Path(f"/proc/{launcher}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    raise RuntimeError(f"launcher {launcher} has no child")


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, for the load during a measurement."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# The environment -----------------------------------------------------------------------------


@dataclass
class Bench:
    manager: UserManager
    work: Path
    agent: AgentCli
    model_dir: Path
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def row(self, figure: str, measured: str, target: str) -> None:
        self.rows.append((figure, measured, target))
        print(f"  {figure}: {measured}   [target: {target}]", flush=True)

    def cli(self, *args: str, timeout: float = 120.0, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.agent.run(*args, timeout=timeout)
        if ok and done.returncode != 0:
            raise RuntimeError(f"vllm-agent {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def show(self, name: str, *props: str) -> dict[str, str]:
        return self.manager.show(f"vllm@{name}.service", *props)

    def deploy_file(self, name: str, port: int, *engine_args: str, no_tests: bool = True, extra: str = "") -> None:
        lines = [f'model = "{self.model_dir}"', f"port = {port}", f"args = {json.dumps(list(engine_args))}"]
        if no_tests:
            lines.append("tests = []")
        self.agent.write_deployment(name, "\n".join(lines) + "\n" + extra)

    def wait_active(self, name: str, restarts: int = 0, timeout: float = 60.0) -> dict[str, str]:
        def ready() -> dict[str, str] | None:
            state = self.show(name, "ActiveState", "SubState", "NRestarts", "MainPID", "Result")
            if state.get("ActiveState") == "failed":
                raise RuntimeError(f"vllm@{name} failed: {state}\n{self.agent.log(name)[-3000:]}")
            if state.get("ActiveState") == "active" and int(state.get("NRestarts", "0")) >= restarts:
                return state
            return None

        return wait_for(f"vllm@{name} active with {restarts} restart(s)", ready, timeout)

    def daemon_start(self) -> int:
        self.manager.systemctl("start", "vllm-agent.service", timeout=120)
        pid = int(self.manager.show("vllm-agent.service", "MainPID")["MainPID"])
        if not pid:
            raise RuntimeError(
                f"vllm-agent.service has no MainPID: {self.manager.show('vllm-agent.service', 'ActiveState', 'Result')}"
            )
        return pid

    def daemon_stop(self) -> None:
        self.manager.systemctl("stop", "vllm-agent.service", check=False, timeout=60)

    def remove(self, name: str) -> None:
        self.cli("remove", name, ok=False, timeout=120)


@contextlib.contextmanager
def bench_environment(keep: bool) -> Iterator[Bench]:
    work = Path(tempfile.mkdtemp(prefix="vllm-agent-bench-"))
    try:
        manager = UserManager.boot()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    # The D-Bus client in this process finds the private manager through these (see tests/conftest.py).
    saved = {name: os.environ.get(name) for name in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")}
    os.environ["XDG_RUNTIME_DIR"] = str(manager.runtime_dir)
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    try:
        config_dir, state_dir, log_dir = work / "conf", work / "state", work / "logs"
        config_dir.mkdir()
        (config_dir / "agent.toml").write_text(
            f"port_range = [{PORTS[0]}, {PORTS[1]}]\n"
            f'unit_dir = "{manager.unit_dir}"\nstate_dir = "{state_dir}"\nlog_dir = "{log_dir}"\n'
            f'socket = "{work / "agent.sock"}"\n'
            f"[engine]\ncommand = [{json.dumps(sys.executable)}, {json.dumps(str(FAKE_ENGINE))}]\n"
            # Like the e2e fixture (min_delay 0.2), with room for the repeated faults below.
            "[restart]\nmax_restarts = 20\nwindow = 300\nmin_delay = 0.2\n"
            "[startup]\ntimeout = 120\n"
        )
        agent = AgentCli(config_dir=config_dir, env=agent_env(manager.env), log_dir=log_dir, state_dir=state_dir)
        bench = Bench(manager, work, agent, write_tiny_model_dir(work / "models" / "tiny"))
        bench.cli("init")
        manager.daemon_reload()
        yield bench
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        try:
            manager.systemctl("stop", "vllm-agent.service", check=False, timeout=60)
            manager.stop_all("vllm@*")
        except Exception as err:  # noqa: BLE001 - close() below still stops everything
            print(f"cleanup: stopping units: {err}", file=sys.stderr)
        manager.close()
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


# Async pieces: /health polling and the D-Bus watch --------------------------------------------


async def probe(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.split()[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def first_200(port: int, deadline: float) -> float:
    """Wall time of the first /health 200, probing every PROBE_EVERY seconds."""
    while time.monotonic() < deadline:
        if await probe(port):
            return time.time()
        await asyncio.sleep(PROBE_EVERY)
    raise TimeoutError(f"no /health 200 on port {port}")


# 1. Engine death ------------------------------------------------------------------------------


def fig_engine_death(bench: Bench, reps: int, min_delay: float, name: str, port: int) -> dict[str, list[float]]:
    bench.deploy_file(name, port, "--fake-load-time", "0.3", extra=f"[restart]\nmin_delay = {min_delay}\n")
    bench.cli("start", name)
    state_file = bench.agent.state_dir / "deployments" / f"{name}.json"
    history = bench.agent.state_dir / "history" / f"{name}.jsonl"
    log = bench.agent.log_dir / f"{name}.log"
    out: dict[str, list[float]] = {
        "launcher": [],
        "launcher_log": [],
        "launcher_exit": [],
        "daemon": [],
        "restart": [],
        "active": [],
    }
    try:
        for i in range(reps):
            state = bench.wait_active(name, restarts=i)
            wait_for("phase serving", lambda: json.loads(state_file.read_text()).get("phase") == "serving", 10)
            time.sleep(0.3)  # let the daemon see the unit active before the next fault
            launcher = int(state["MainPID"])
            engine = engine_pid(launcher)
            launcher_fd = os.pidfd_open(launcher)  # readable once the launcher exited
            history_at, log_at = size(history), size(log)
            t0, t0_mono = time.time(), time.monotonic()
            os.kill(engine, signal.SIGKILL)
            failed_at = restarted_at = exited_at = None
            deadline = t0_mono + 20
            while time.monotonic() < deadline and (failed_at is None or restarted_at is None or exited_at is None):
                if exited_at is None and select.select([launcher_fd], [], [], 0)[0]:
                    exited_at = time.time()
                    os.close(launcher_fd)
                if failed_at is None:
                    with contextlib.suppress(OSError, ValueError):
                        saved = json.loads(state_file.read_text())
                        if saved.get("phase") == "failed" and saved.get("since", 0) >= t0:
                            failed_at = saved["since"]
                if restarted_at is None and size(history) > history_at:
                    with history.open() as handle:
                        handle.seek(history_at)
                        for line in handle:
                            with contextlib.suppress(ValueError):
                                entry = json.loads(line)
                                if entry.get("kind") == "restarted" and entry.get("at", 0) >= t0:
                                    restarted_at = entry["at"]
                                    break
                time.sleep(PROBE_EVERY)
            if exited_at is None:
                os.close(launcher_fd)
            after = bench.wait_active(name, restarts=i + 1)
            timestamps = bench.show(name, "ActiveEnterTimestampMonotonic", "ExecMainStartTimestampMonotonic")
            failed_lines = agent_events(log, log_at, "failed")
            if failed_at is not None:
                out["launcher"].append(failed_at - t0)
            if failed_lines:
                out["launcher_log"].append(parse_iso(failed_lines[0]["timestamp"]) - t0)
            if exited_at is not None:
                out["launcher_exit"].append(exited_at - t0)
            if restarted_at is not None:
                out["daemon"].append(restarted_at - t0)
            out["restart"].append(int(timestamps["ExecMainStartTimestampMonotonic"]) / 1e6 - t0_mono)
            out["active"].append(int(timestamps["ActiveEnterTimestampMonotonic"]) / 1e6 - t0_mono)
            print(
                f"    kill {i + 1}: launcher recorded {ms(failed_at and failed_at - t0)}, "
                f"exited {ms(exited_at and exited_at - t0)}, daemon {ms(restarted_at and restarted_at - t0)}, "
                f"new launcher exec {ms(out['restart'][-1])}, active again {ms(out['active'][-1])} "
                f"(NRestarts {after['NRestarts']})",
                flush=True,
            )
    finally:
        bench.remove(name)
    return out


# 2. Hang -> restart -----------------------------------------------------------------------------


async def _hang_cycles(bench: Bench, name: str, port: int, reps: int) -> tuple[list[float], list[tuple[float, float]]]:
    from vllm_agent.systemd import connect

    unit = f"vllm@{name}.service"
    client = await connect(True)
    watch = client.watch([unit])
    listens: list[float] = []
    restarts: list[tuple[float, float]] = []  # (seen here, systemd's StateChangeTimestamp) per restart
    restarted = asyncio.Event()
    deadline = time.monotonic() + 30 + reps * 20

    async def poller() -> None:
        while len(listens) < reps:
            listens.append(await first_200(port, deadline))
            await restarted.wait()
            restarted.clear()

    async def watcher() -> None:
        last = 0
        async for event in watch:
            if event.state is not None and event.state.n_restarts > last:
                last = event.state.n_restarts
                restarts.append((time.time(), event.state.state_change_timestamp / 1e6))
                restarted.set()
                if last >= reps:
                    return

    tasks = [asyncio.create_task(poller()), asyncio.create_task(watcher())]
    try:
        await asyncio.to_thread(bench.cli, "start", name, "--no-wait")
        await asyncio.wait_for(tasks[1], max(1.0, deadline - time.monotonic()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watch.aclose()
        await client.close()
    return listens, restarts


def fig_hang(bench: Bench, reps: int, name: str = "hang", port: int = 24002) -> dict[str, list[float]]:
    bench.deploy_file(
        name,
        port,
        "--fake-load-time",
        "0.3",
        "--fake-mode",
        "hang-after:1",
        extra='[health]\nchecks = ["http", "completion"]\ninterval = 1\ntimeout = 1\nfailure_threshold = 2\n'
        f"[restart]\nmax_restarts = {reps + 5}\nwindow = 600\n",
    )
    log = bench.agent.log_dir / f"{name}.log"
    try:
        listens, restarts = asyncio.run(_hang_cycles(bench, name, port, reps))
    finally:
        bench.remove(name)
    unhealthy = [parse_iso(record["timestamp"]) for record in agent_events(log, 0, "unhealthy")]
    out: dict[str, list[float]] = {"restart": [], "restart_systemd": [], "unhealthy": []}
    for k, (seen, changed) in enumerate(restarts[:reps]):
        hang = listens[k] + 1.0  # the fake hangs 1 s after it starts listening (checked every 50 ms)
        out["restart"].append(seen - hang)
        out["restart_systemd"].append(changed - hang)
        if k < len(unhealthy):
            out["unhealthy"].append(unhealthy[k] - hang)
        print(
            f"    hang {k + 1}: launcher unhealthy after {secs(out['unhealthy'][-1] if k < len(unhealthy) else None)}, "
            f"NRestarts+1 seen after {secs(seen - hang)} (systemd state change {secs(changed - hang)})",
            flush=True,
        )
    return out


# 3. Ready gap -------------------------------------------------------------------------------------


async def _one_start(bench: Bench, name: str, port: int) -> tuple[float, float, float]:
    """(first /health 200, ActiveEnterTimestamp, active seen over D-Bus), wall times."""
    from vllm_agent.systemd import connect

    unit = f"vllm@{name}.service"
    client = await connect(True)
    watch = client.watch([unit])
    deadline = time.monotonic() + 60

    async def active() -> tuple[float, float]:
        async for event in watch:
            if event.state is not None and event.state.active_state == "active":
                return time.time(), event.state.active_enter_timestamp / 1e6
            if event.state is not None and event.state.active_state == "failed":
                raise RuntimeError(f"{unit} failed while starting")
        raise RuntimeError("the watch ended")

    health = asyncio.create_task(first_200(port, deadline))
    activated = asyncio.create_task(active())
    try:
        await asyncio.to_thread(bench.cli, "start", name, "--no-wait")
        first, (seen, entered) = await asyncio.wait_for(
            asyncio.gather(health, activated), max(1.0, deadline - time.monotonic())
        )
    finally:
        for task in (health, activated):
            task.cancel()
        await asyncio.gather(health, activated, return_exceptions=True)
        await watch.aclose()
        await client.close()
    return first, entered, seen


def fig_ready_gap(bench: Bench, reps: int, name: str, port: int, tests: bool) -> dict[str, list[float]]:
    bench.deploy_file(name, port, "--fake-load-time", "0.5", no_tests=not tests)
    log = bench.agent.log_dir / f"{name}.log"
    out: dict[str, list[float]] = {"gap": [], "gap_seen": [], "tests": [], "gap_minus_tests": []}
    try:
        for i in range(reps):
            log_at = size(log)
            first, entered, seen = asyncio.run(_one_start(bench, name, port))
            tests_took = sum(float(r.get("seconds", 0.0)) for r in agent_events(log, log_at, "test"))
            out["gap"].append(entered - first)
            out["gap_seen"].append(seen - first)
            out["tests"].append(tests_took)
            out["gap_minus_tests"].append(entered - first - tests_took)
            print(
                f"    start {i + 1}: /health 200 -> active {ms(entered - first)} "
                f"(D-Bus signal here {ms(seen - first)}), tests {ms(tests_took)}",
                flush=True,
            )
            bench.manager.systemctl("stop", f"vllm@{name}.service", timeout=60)
    finally:
        bench.remove(name)
    return out


# 4 and 5. The daemon's cost, and `vllm-agent status` -----------------------------------------------


def start_fleet(bench: Bench, count: int, already: int) -> None:
    for i in range(already, count):
        name = f"f{i:02d}"
        bench.deploy_file(name, FLEET_PORT + i, "--fake-load-time", "0.3")
        bench.cli("start", name, "--no-wait")
    for i in range(count):
        bench.wait_active(f"f{i:02d}", timeout=300)


def status_latency(bench: Bench, expected_source: str, runs: int = 10) -> list[float]:
    done = bench.cli("status", "--json", ok=False, timeout=60)
    source = json.loads(done.stdout).get("source") if done.stdout.startswith("{") else None
    if source != expected_source:
        raise RuntimeError(f"vllm-agent status answered from {source!r}, not {expected_source!r}: {done.stderr}")
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        done = bench.cli("status", ok=False, timeout=60)
        took.append(time.perf_counter() - started)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"vllm-agent status exited {done.returncode}: {done.stderr}")
    return took


def import_floor(bench: Bench, runs: int = 10) -> list[float]:
    """Wall time of a Python that only imports what `vllm-agent status` imports: the CLI's floor."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import vllm_agent.cli.main, vllm_agent.cli.commands"],
            check=True,
            timeout=60,
            env=bench.agent.env,
        )
        took.append(time.perf_counter() - started)
    return took


def fig_daemon(bench: Bench, count: int, already: int, window: float = 30.0) -> dict[str, Any]:
    bench.daemon_stop()
    start_fleet(bench, count, already)
    pid = bench.daemon_start()
    time.sleep(5.0)
    launcher = int(bench.show("f00", "MainPID")["MainPID"])
    ticks0, launcher0, machine0 = proc_cpu_ticks(pid), proc_cpu_ticks(launcher), cpu_busy()
    time.sleep(window)
    ticks1, launcher1, machine1 = proc_cpu_ticks(pid), proc_cpu_ticks(launcher), cpu_busy()
    result = {
        "rss_mb": proc_rss_kb(pid) / 1024,
        "cpu_pct": (ticks1 - ticks0) / CLK_TCK / window * 100,
        "launcher_rss_mb": proc_rss_kb(launcher) / 1024,
        "launcher_cpu_pct": (launcher1 - launcher0) / CLK_TCK / window * 100,
        "machine_busy_pct": (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1]) * 100,
    }
    assert int(bench.manager.show("vllm-agent.service", "MainPID")["MainPID"]) == pid, "the daemon restarted"
    result["status_daemon"] = status_latency(bench, "daemon")
    bench.daemon_stop()
    result["status_no_daemon"] = status_latency(bench, "systemd")
    result["import_floor"] = import_floor(bench)
    print(
        f"    {count} deployment(s): daemon RSS {result['rss_mb']:.1f} MB, CPU {result['cpu_pct']:.2f}% "
        f"(machine busy {result['machine_busy_pct']:.0f}% of {os.cpu_count()} CPUs); launcher RSS "
        f"{result['launcher_rss_mb']:.1f} MB, CPU {result['launcher_cpu_pct']:.2f}%; status "
        f"{med_max(result['status_daemon'])} / without daemon {med_max(result['status_no_daemon'])}",
        flush=True,
    )
    return result


# Main ------------------------------------------------------------------------------------------------


def host_line() -> str:
    free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.splitlines()
    mem = free[1].split() if len(free) > 1 else []
    load = Path("/proc/loadavg").read_text().split()[:3]
    other = subprocess.run(["pgrep", "-f", "vllm.entrypoints"], capture_output=True, text=True).stdout.split()
    return (
        f"nproc {os.cpu_count()}, memory {mem[1] if mem else '?'} GiB total / {mem[6] if len(mem) > 6 else '?'} GiB "
        f"available, load average {' '.join(load)}, real-vLLM processes running: {len(other)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; daemon cost with 1 and 16 deployments")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, state) for a look")
    args = parser.parse_args()
    kill_reps, hang_reps, gap_reps = (3, 2, 2) if args.quick else (5, 3, 5)
    fleet = (1, 16) if args.quick else (1, 16, 64)
    started = dt.datetime.now().astimezone()
    print(f"vllm-agent recovery bench, {started:%Y-%m-%d %H:%M %Z}; before: {host_line()}", flush=True)

    with bench_environment(args.keep) as bench:
        print("3. ready gap", flush=True)
        gap = fig_ready_gap(bench, gap_reps, "gap", 24003, tests=False)
        gapt = fig_ready_gap(bench, gap_reps, "gapt", 24004, tests=True)
        print("2. hang -> restart (no daemon)", flush=True)
        hang = fig_hang(bench, hang_reps)
        print("1. engine death (daemon running)", flush=True)
        bench.daemon_start()
        death = fig_engine_death(bench, kill_reps, 0.2, "kill", 24001)
        death0 = fig_engine_death(bench, kill_reps, 0.0, "kill0", 24005)
        print("4/5. daemon cost and status latency", flush=True)
        costs = {}
        already = 0
        for count in fleet:
            costs[count] = fig_daemon(bench, count, already)
            already = count

        budget = 1 * 2 + 1
        bench.row("1a engine SIGKILL -> launcher recorded (state file)", med_max(death["launcher"]), "< 100 ms")
        bench.row(
            "1b engine SIGKILL -> daemon recorded 'restarted' (min_delay 0.2)", med_max(death["daemon"]), "< 100 ms"
        )
        bench.row("   same, min_delay 0", med_max(death0["daemon"]), "< 100 ms")
        bench.row(
            "   (launcher exited, min_delay 0.2 / 0)",
            f"{med_max(death['launcher_exit'])} / {med_max(death0['launcher_exit'])}",
            "-",
        )
        bench.row("   (systemd exec'd the new launcher, min_delay 0.2)", med_max(death["restart"]), "-")
        bench.row("   (unit active again, min_delay 0.2)", med_max(death["active"]), "-")
        bench.row(f"2  hang -> NRestarts+1 (budget {budget} s)", med_max(hang["restart"], secs), f"< {budget + 1} s")
        bench.row("   (hang -> launcher logged unhealthy)", med_max(hang["unhealthy"], secs), "-")
        bench.row("3a /health 200 -> unit active, no tests", med_max(gap["gap"]), "< 200 ms")
        bench.row("   (same, D-Bus signal seen by a client)", med_max(gap["gap_seen"]), "-")
        bench.row(
            "3b /health 200 -> unit active, openai-smoke, minus tests' time",
            med_max(gapt["gap_minus_tests"]),
            "< 200 ms",
        )
        bench.row("   (tests' own time / whole gap)", f"{med_max(gapt['tests'])} / {med_max(gapt['gap'])}", "-")
        for count, cost in costs.items():
            marker = "" if count == 16 else " (info)"
            bench.row(f"4  daemon RSS, {count} ready deployments", f"{cost['rss_mb']:.1f} MB", "< 60 MB" + marker)
            bench.row(
                f"4  daemon idle CPU over 30 s, {count} deployments",
                f"{cost['cpu_pct']:.2f}% (machine {cost['machine_busy_pct']:.0f}% busy)",
                "< 1%" + marker,
            )
        for count, cost in costs.items():
            bench.row(
                f"4  launcher RSS / idle CPU (one unit, {count} deployments)",
                f"{cost['launcher_rss_mb']:.1f} MB / {cost['launcher_cpu_pct']:.2f}%",
                "- (per deployment)",
            )
        for count, cost in costs.items():
            bench.row(f"5  status, daemon running, {count} deployments", med_max(cost["status_daemon"]), "< 150 ms")
            bench.row(f"5  status, daemon stopped, {count} deployments", med_max(cost["status_no_daemon"]), "< 150 ms")
            bench.row(
                f"   (import floor: python -c 'import vllm_agent.cli.main, .commands', {count})",
                med_max(cost["import_floor"]),
                "-",
            )
        rows = bench.rows

    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    header = ("figure", "measured", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print()
    print(f"| {' | '.join(h.ljust(w) for h, w in zip(header, widths, strict=True))} |")
    print(f"|{'|'.join('-' * (w + 2) for w in widths)}|")
    for row in rows:
        print(f"| {' | '.join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))} |")
    took = dt.datetime.now().astimezone() - started
    print(f"\nfinished after {took.total_seconds():.0f} s; after: {host_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
