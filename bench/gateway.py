#!/usr/bin/env python3
"""The gateway's request path against a fixed fast backend, side by side with the backend direct
(and a minimal aiohttp proxy, vllm-router and LiteLLM when their venvs exist).

    .venv/bin/python bench/gateway.py [--seconds 10] [--aiohttp /tmp/bench-aiohttp/bin/python]
        [--router /tmp/bench-router/bin/vllm-router] [--litellm /tmp/bench-litellm/bin/litellm]

Each competitor lives in its own venv (python3 -m venv /tmp/bench-X; pip install aiohttp uvloop |
vllm-router | 'litellm[proxy]'), never in the project's.

The backend is a raw asyncio (uvloop) responder with a fixed 314-byte chat completion (and a
fixed 8-event SSE stream for "stream": true) on core 1; the proxy under test is pinned to core 0;
wrk runs on core 1 beside the backend (FACTS.md, "Front-door floor measured here"). The gateway
runs as `vllm-agent gateway` itself, following a stand-in daemon socket that announces one ready
deployment, with its access log on (to a file) and migration and cancellation as always on.
Each figure is one wrk run; these machines are noisy (10-15 %): trust ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHAT = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def backend_main(port: int) -> None:
    """The fixed responder: keep-alive HTTP/1.1, reads Content-Length bodies, no parsing beyond."""
    import uvloop

    body = json.dumps(CHAT).encode()
    plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "bench"}
    chunk["choices"] = [{"index": 0, "delta": {"content": " hi"}, "finish_reason": None}]
    event = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    events = [event] * 8 + [b"data: [DONE]\n\n"]
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
        + b"0\r\n\r\n"
    )

    class Backend(asyncio.Protocol):
        def connection_made(self, transport):  # noqa: ANN001
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                match = re.search(rb"content-length: *(\d+)", head)
                size = int(match.group(1)) if match else 0
                if len(self.buffer) < end + 4 + size:
                    return
                req_body = self.buffer[end + 4 : end + 4 + size]
                self.buffer = self.buffer[end + 4 + size :]
                self.transport.write(stream if b'"stream": true' in req_body or b'"stream":true' in req_body else plain)

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Backend, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(run())


AIOHTTP_PROXY = """
import sys, aiohttp, uvloop
from aiohttp import web
backend, port = sys.argv[1], int(sys.argv[2])

async def main():
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def proxy(request):
        body = await request.read()
        async with session.post(backend + request.path, data=body,
                                headers={"content-type": "application/json"}) as upstream:
            if upstream.content_type == "text/event-stream":
                response = web.StreamResponse(status=upstream.status, headers={"content-type": "text/event-stream"})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            return web.Response(status=upstream.status, body=await upstream.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()

import asyncio
uvloop.run(main())
"""


def run_aiohttp(python: str, backend_port: int, procs: list, work: Path) -> tuple[int, int]:
    """The floor of FACTS.md: a minimal aiohttp proxy, one keep-alive session, no routing."""
    port = free_port()
    (work / "aiohttp_proxy.py").write_text(AIOHTTP_PROXY)
    with open(work / "aiohttp.log", "w") as log:  # wrk's closing connections make it log tracebacks
        proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                python,
                str(work / "aiohttp_proxy.py"),
                f"http://127.0.0.1:{backend_port}",
                str(port),
            ],
            stdout=log,
            stderr=log,
        )
    procs.append(proc)
    wait_port(port, 60, proc)
    return port, proc.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stand_in_daemon(path: Path, backend_port: int) -> None:
    """Answers GET /v1/events with one ready deployment, then holds the stream open."""
    row = {"name": "bench", "served": "bench", "state": "ready", "host": "127.0.0.1", "port": backend_port}
    line = json.dumps({"deployments": [row]}).encode() + b"\n"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n" + line)
            threading.Thread(target=lambda c=conn: (c.recv(1), c.close()), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def wait_port(port: int, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (all its threads) so far."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, body: dict, connections: int, seconds: int, pid: int | None = None) -> dict[str, float]:
    """One wrk run; with ``pid``, also the CPU microseconds that process spent per request (a
    figure that, unlike RPS, does not depend on what else shares its core)."""
    before = cpu_seconds(pid)
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    spent = cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    done = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "cpu_us": spent * 1e6 / done if pid and done else 0.0,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(name: str, url: str, seconds: int, pid: int | None) -> dict[str, object]:
    chat = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    row: dict[str, object] = {"name": name}
    row["rps_c64"] = wrk(url, chat, 64, seconds, pid)
    row["rps_c64_stream"] = wrk(url, chat | {"stream": True}, 64, seconds, pid)
    row["c1"] = wrk(url, chat, 1, seconds)
    row["c8"] = wrk(url, chat, 8, seconds)
    row["rss_mb"] = rss_mb(pid) if pid else None
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--router", help="a vllm-router executable (pip install vllm-router)")
    parser.add_argument("--litellm", help="a litellm executable (pip install 'litellm[proxy]')")
    parser.add_argument("--aiohttp", help="a python with aiohttp and uvloop: the minimal aiohttp proxy floor")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    work = Path(tempfile.mkdtemp(prefix="vagbench-"))
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        backend_port = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--backend", str(backend_port)]))
        wait_port(backend_port)
        path = "/v1/chat/completions"
        rows.append(measure("backend direct", f"http://127.0.0.1:{backend_port}{path}", args.seconds, None))

        gw_port = free_port()
        (work / "conf").mkdir()
        stand_in_daemon(work / "agent.sock", backend_port)
        (work / "conf" / "agent.toml").write_text(
            f'socket = "{work / "agent.sock"}"\nstate_dir = "{work / "state"}"\n'
            f'[gateway]\nlisten = "127.0.0.1:{gw_port}"\n'
        )
        agent = str(Path(sys.executable).parent / "vllm-agent")
        with open(work / "gateway.log", "w") as log:
            gateway = subprocess.Popen(
                ["taskset", "-c", "0", agent, "--config-dir", str(work / "conf"), "gateway"], stdout=log, stderr=log
            )
        procs.append(gateway)
        wait_port(gw_port)
        time.sleep(1)  # the stand-in daemon's view arrives
        rows.append(measure("vllm-agent gateway", f"http://127.0.0.1:{gw_port}{path}", args.seconds, gateway.pid))

        if args.aiohttp:
            rows.append(
                competitor(
                    "minimal aiohttp proxy",
                    lambda: run_aiohttp(args.aiohttp, backend_port, procs, work),
                    args.seconds,
                    path,
                )
            )
        if args.router:
            rows.append(
                competitor(
                    "vllm-router (round_robin)",
                    lambda: run_router(args.router, backend_port, procs, work),
                    args.seconds,
                    path,
                )
            )
        if args.litellm:
            rows.append(
                competitor("LiteLLM", lambda: run_litellm(args.litellm, backend_port, procs, work), args.seconds, path)
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    print_table(rows)
    return 0


def competitor(name: str, start, seconds: int, path: str) -> dict[str, object]:  # noqa: ANN001
    """Measure another proxy; one that fails to start is reported, not fatal."""
    try:
        port, pid = start()
    except RuntimeError as err:
        return {"name": name, "failed": str(err)}
    return measure(name, f"http://127.0.0.1:{port}{path}", seconds, pid)


def run_router(executable: str, backend_port: int, procs: list, work: Path) -> tuple[int, int]:
    port = free_port()
    with open(work / "router.log", "w") as log:
        router = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                executable,
                "--worker-urls",
                f"http://127.0.0.1:{backend_port}",
                "--policy",
                "round_robin",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--prometheus-port",
                str(free_port()),
            ],  # its default, 29000, may be taken
            stdout=log,
            stderr=log,
        )
    procs.append(router)
    wait_port(port, 60, router)
    return port, router.pid


def run_litellm(executable: str, backend_port: int, procs: list, work: Path) -> tuple[int, int]:
    port = free_port()
    (work / "litellm.yaml").write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
        f"      api_base: http://127.0.0.1:{backend_port}/v1\n      api_key: none\n"
        "litellm_settings:\n  telemetry: false\n  callbacks: []\n  success_callback: []\n"
        "general_settings:\n  disable_spend_logs: true\n  dangerously_permit_weak_or_unset_master_key: true\n"
    )
    env = {**os.environ, "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    with open(work / "litellm.log", "w") as log:
        litellm = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                executable,
                "--config",
                str(work / "litellm.yaml"),
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
    procs.append(litellm)
    try:
        wait_port(port, 180, litellm)
    except RuntimeError as err:
        tail = (work / "litellm.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{err}: {' | '.join(tail)}") from None
    return port, litellm.pid


def print_table(rows: list[dict]) -> None:
    direct = rows[0]
    print(
        "| | CPU us/req | CPU us/req stream | RPS c=64 | RPS c=64 stream | p50 c=1 ms (added) | p99 c=1 ms (added) "
        "| p50 c=8 ms (added) | p99 c=8 ms (added) | RSS MB | non-2xx |"
    )
    print("|---" + "|---:" * 10 + "|")
    for row in rows:
        if "failed" in row:
            print(f"| {row['name']} | did not start: {row['failed'][:200]} |")
            continue
        cells = [row["name"], f"{row['rps_c64']['cpu_us']:.0f}", f"{row['rps_c64_stream']['cpu_us']:.0f}"]
        cells += [f"{row['rps_c64']['rps']:.0f}", f"{row['rps_c64_stream']['rps']:.0f}"]
        for conc in ("c1", "c8"):
            for q in ("p50", "p99"):
                value = row[conc][q]
                added = "" if row is direct else f" (+{value - direct[conc][q]:.3f})"
                cells.append(f"{value:.3f}{added}")
        cells.append(f"{row['rss_mb']:.0f}" if row["rss_mb"] else "-")
        cells.append(str(sum(row[k]["errors"] for k in ("rps_c64", "rps_c64_stream", "c1", "c8"))))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--backend":
        backend_main(int(sys.argv[2]))
    else:
        sys.exit(main())
