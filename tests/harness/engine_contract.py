"""The engine contract: checks that real vLLM and the fake (agent/testing/fake_vllm/) both pass.

tests/unit/test_engine_contract.py runs every check against the fake, tests/vllm/test_real_engine_contract.py
against real vLLM 0.32: what the fast tiers assume of the engine is proven on the real one. Each
check takes an ``EngineRun`` (one engine process started by ``start``, its output timed line by
line). The checks that stop the EngineCore (``check_hang_freezes_metrics``) resume it; the one
that kills it (``check_engine_death``) ends the run, so it goes last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .fake_engine import wait_until
from .ports import PortLease
from .processes import descendants

SERVED = "tiny"
ENGINE_ARGV0 = b"VLLM::EngineCore"
UNKNOWN_FLAG = "--no-such-flag"
# A wedged engine's gauges freeze; they must stay frozen across this many seconds of looking.
FREEZE_WATCH = 2.0


def serve_args(port: int) -> list[str]:
    """What every contract run is told, after its model: vLLM's flags in the forms its parser
    takes (``_`` for ``-``, ``--flag=value``), so both engines prove they accept them."""
    return [
        "--served-model-name",
        SERVED,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max_model_len=256",
        "--enforce-eager",
    ]


@dataclass
class EngineRun:
    proc: subprocess.Popen[bytes]
    port: int
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    ready_after: float = 0.0
    refused_while_bound: bool = False  # seen during loading: port taken, connections refused

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines[-60:])

    def core_pid(self) -> int:
        """The ``VLLM::EngineCore`` process below the API server."""

        def find() -> int | None:
            for pid in sorted(descendants(self.proc.pid)):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(ENGINE_ARGV0):
                        return pid
            return None

        return wait_until(find, 10, "the VLLM::EngineCore process")

    def close(self) -> None:
        """Kill the server's process group and its EngineCore (resumed first: it may be stopped)."""
        pids = descendants(self.proc.pid) | {self.proc.pid}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _port_state(port: int) -> str:
    """ "listening", "bound" (taken, not listening) or "free", as a client and a binder see it."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return "listening"
    with socket.socket() as binder:  # no SO_REUSEPORT: a bound port is EADDRINUSE
        try:
            binder.bind(("127.0.0.1", port))
        except OSError as err:
            return "bound" if err.errno == errno.EADDRINUSE else "free"
    return "free"


def start(
    argv: Sequence[str], lease: PortLease, *, env: dict[str, str] | None = None, timeout: float = 600
) -> EngineRun:
    """Start an engine and watch it load until ``/health`` answers 200; fail with its output if it
    exits first. ``argv`` must make it serve ``tiny`` on 127.0.0.1:``lease.port``."""
    port = lease.port
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    # The lease goes only now, while the engine is still importing: the contract watches the port
    # go from free to bound to listening, which a held lease would hide.
    lease.release()
    run = EngineRun(proc=proc, port=port, started=time.monotonic())

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            run.lines.append((time.monotonic() - run.started, raw.decode(errors="replace").rstrip()))

    threading.Thread(target=read, daemon=True, name=f"engine-output-{port}").start()
    deadline = run.started + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the engine exited with {proc.returncode} before ready:\n{run.output()}")
            state = _port_state(port)
            if state == "bound":
                run.refused_while_bound = True
            elif state == "listening":
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{run.base}/health", timeout=5).status_code == 200:
                        run.ready_after = time.monotonic() - run.started
                        return run
            if time.monotonic() > deadline:
                raise AssertionError(f"the engine was not ready after {timeout}s:\n{run.output()}")
            time.sleep(0.05)
    except BaseException:
        run.close()
        raise


# -- start-up and the command line ---------------------------------------------------------------


def check_binds_then_listens(run: EngineRun) -> None:
    """While loading, the port is taken but refuses connections (a busy port fails early; the
    launcher cannot mistake loading for ready)."""
    assert run.refused_while_bound, "never saw the port bound but not listening while loading"
    assert _port_state(run.port) == "listening"


def check_loads_quietly(run: EngineRun) -> None:
    """Loading has long silent stretches: what the launcher's stall detector must survive."""
    times = [0.0] + [t for t, _ in run.lines if t <= run.ready_after] + [run.ready_after]
    longest = max(b - a for a, b in zip(times, times[1:], strict=False))
    wanted = min(3.0, 0.2 * run.ready_after)
    assert longest >= wanted, f"longest silence while loading {longest:.2f}s < {wanted:.2f}s:\n{run.output()}"


def check_refuses_an_unknown_flag(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """A misspelt flag is exit status 2 with argparse's message, before anything loads."""
    try:  # real vLLM needs ~8 s on 2 cores to import and refuse; a server that runs instead never exits
        done = subprocess.run([*argv, UNKNOWN_FLAG], capture_output=True, text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{UNKNOWN_FLAG} was accepted: still running after 90 s") from None
    assert done.returncode == 2, f"exit {done.returncode}:\n{done.stderr[-2000:]}"
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(f"error: unrecognized arguments: {UNKNOWN_FLAG}"), last


# -- the API of a healthy engine ----------------------------------------------------------------


def check_endpoints(run: EngineRun) -> None:
    get = lambda path: httpx.get(run.base + path, timeout=30)  # noqa: E731
    health = get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert get("/ping").status_code == 200
    assert httpx.post(run.base + "/ping", timeout=30).status_code == 200
    version = get("/version")
    assert version.status_code == 200 and isinstance(version.json()["version"], str)
    models = get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [SERVED]
    assert models["data"][0]["owned_by"] == "vllm" and models["data"][0]["max_model_len"] == 256
    metrics = get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    missing = get("/v2/nothing")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = get("/v1/completions")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})


BAD_REQUESTS: list[tuple[str, object, int]] = [
    ("/v1/completions", {"model": SERVED}, 400),
    ("/v1/completions", {"model": SERVED, "prompt": "a", "max_tokens": 0}, 400),
    ("/v1/completions", {"model": SERVED, "prompt": "a", "max_tokens": "many"}, 400),
    ("/v1/completions", {"model": SERVED, "prompt": "a", "max_tokens": 500}, 400),
    ("/v1/completions", {"model": SERVED, "prompt": "a", "temperature": -1}, 400),
    ("/v1/completions", {"model": SERVED, "prompt": "a", "stream_options": {"include_usage": True}}, 400),
    ("/v1/completions", b"{not json", 400),
    ("/v1/completions", {"model": "other", "prompt": "a"}, 404),
    ("/v1/chat/completions", {"model": SERVED, "messages": []}, 400),
    ("/v1/chat/completions", {"model": SERVED, "messages": [{"content": "no role"}]}, 400),
    ("/v1/chat/completions", {"model": SERVED, "messages": "hi"}, 400),
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "a"}]}, 404),
]


def check_invalid_requests(run: EngineRun) -> None:
    """Invalid requests are refused with vLLM's error body and never reach the engine."""
    before = metric(run, "vllm:prompt_tokens_total")
    for path, body, status in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(
            run.base + path, content=content, headers={"content-type": "application/json"}, timeout=30
        )
        case = f"{path} {body!r}: {response.text[:300]}"
        assert response.status_code == status, case
        error = response.json()["error"]
        assert error["code"] == status and isinstance(error["message"], str), case
        if status == 404:
            assert error["type"] == "NotFoundError", case
            assert error["message"].startswith("The model `other` does not exist."), case
    assert metric(run, "vllm:prompt_tokens_total") == before


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body; every event is one ``data: `` line and a blank line."""
    assert text.endswith("\n\n"), repr(text[-200:])
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), repr(text[:500])
    return [e[len("data: ") :] for e in events]


def check_sse_framing(run: EngineRun) -> None:
    body = {"model": SERVED, "prompt": "a", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", run.base + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    body = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", run.base + "/v1/chat/completions", json=body, timeout=60) as response:
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:generation_tokens_total": "counter",
    "vllm:prompt_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
}


def metric(run: EngineRun, name: str, text: str | None = None) -> float:
    """The sample ``name`` labelled ``model_name="tiny"`` (summed over other labels)."""
    text = httpx.get(run.base + "/metrics", timeout=30).text if text is None else text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model_name="{SERVED}"' in line
    ]
    assert values, f"{name} not in /metrics"
    return sum(values)


def check_metric_names(run: EngineRun) -> None:
    text = httpx.get(run.base + "/metrics", timeout=30).text
    for name, kind in METRICS.items():
        assert f"# TYPE {name} {kind}" in text, name
    before = metric(run, "vllm:generation_tokens_total", text)
    answer = httpx.post(
        run.base + "/v1/completions", json={"model": SERVED, "prompt": "one two", "max_tokens": 4}, timeout=60
    )
    assert answer.status_code == 200
    assert metric(run, "vllm:generation_tokens_total") == before + 4
    assert metric(run, "vllm:num_requests_running") == 0


# -- faults ---------------------------------------------------------------------------------------


def _gauges(run: EngineRun) -> tuple[float, float, float]:
    text = httpx.get(run.base + "/metrics", timeout=30).text
    names = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total")
    return tuple(metric(run, name, text) for name in names)  # type: ignore[return-value]


def check_hang_freezes_metrics(run: EngineRun) -> None:
    """SIGSTOP of the EngineCore mid-generation: /health stays 200, generation never answers, and
    /metrics freezes (running stays at the requests caught mid-step; new requests do not count).
    SIGCONT resumes it."""
    core = run.core_pid()
    long = {"model": SERVED, "prompt": "a", "max_tokens": 200, "stream": True, "ignore_eos": True}
    got: dict[str, object] = {}
    chunks = threading.Semaphore(0)

    def stream() -> None:
        try:
            with httpx.stream("POST", run.base + "/v1/completions", json=long, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        got["last"] = line
                        chunks.release()
        except httpx.HTTPError as err:
            got["error"] = repr(err)

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    assert chunks.acquire(timeout=60) and chunks.acquire(timeout=60), f"no tokens streamed: {got}"
    os.kill(core, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # the last step in flight lands
        frozen = _gauges(run)
        assert frozen[0] >= 1, f"a request was mid-generation, yet running = {frozen[0]}"
        assert httpx.get(run.base + "/health", timeout=30).status_code == 200
        with contextlib.suppress(httpx.ReadTimeout):
            late = httpx.post(
                run.base + "/v1/completions",
                json={"model": SERVED, "prompt": "x", "max_tokens": 1},
                timeout=FREEZE_WATCH,
            )
            raise AssertionError(f"a stopped engine answered: {late.status_code} {late.text[:200]}")
        assert _gauges(run) == frozen, "the gauges moved while the EngineCore was stopped"
    finally:
        os.kill(core, signal.SIGCONT)
    reader.join(120)
    assert got.get("last") == "data: [DONE]" and "error" not in got, got
    answer = httpx.post(
        run.base + "/v1/completions", json={"model": SERVED, "prompt": "x", "max_tokens": 1}, timeout=60
    )
    assert answer.status_code == 200


def check_engine_death(run: EngineRun) -> None:
    """SIGKILL of the EngineCore: /health answers 503, and the server exits 0 by itself (vLLM 0.32
    here: after 1.0 s when idle, 5.7 s with a stream still open). Ends the run."""
    os.kill(run.core_pid(), signal.SIGKILL)
    killed = time.monotonic()

    def health() -> int | None:
        try:
            return httpx.get(run.base + "/health", timeout=5).status_code
        except httpx.TransportError:
            return None

    wait_until(lambda: health() == 503, 30, "/health to answer 503", step=0.05)
    try:
        code = run.proc.wait(120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 120 s after its engine died:\n{run.output()}") from None
    assert code == 0, f"exit {code} {time.monotonic() - killed:.1f}s after its engine died:\n{run.output()}"


class EngineContract:
    """Every check as a test; a test module subclasses it (``class TestFakeEngine(EngineContract)``)
    and provides the fixtures ``run`` (an ``EngineRun``, module-scoped: one engine for all) and
    ``engine_argv`` (a command line for ``check_refuses_an_unknown_flag``), plus ``engine_env``."""

    def test_refuses_an_unknown_flag(self, engine_argv: list[str], engine_env: dict[str, str] | None) -> None:
        check_refuses_an_unknown_flag(engine_argv, engine_env)

    def test_binds_then_listens(self, run: EngineRun) -> None:
        check_binds_then_listens(run)

    def test_loads_quietly(self, run: EngineRun) -> None:
        check_loads_quietly(run)

    def test_endpoints(self, run: EngineRun) -> None:
        check_endpoints(run)

    def test_invalid_requests(self, run: EngineRun) -> None:
        check_invalid_requests(run)

    def test_sse_framing(self, run: EngineRun) -> None:
        check_sse_framing(run)

    def test_metric_names(self, run: EngineRun) -> None:
        check_metric_names(run)

    def test_hang_freezes_metrics(self, run: EngineRun) -> None:
        check_hang_freezes_metrics(run)

    def test_engine_death(self, run: EngineRun) -> None:  # last: it ends the run
        check_engine_death(run)
