"""The fake vLLM engine (agent/testing/fake_vllm/) behaves like the real server where tests rely on it.

It runs through the shared harness (tests/harness/fake_engine.py) and the ``start_fake`` and
``ready_fake`` fixtures (tests/unit/conftest.py), so these tests check those too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from harness.fake_engine import ENGINE_COMM, SCRIPT, alive, comm, wait_until
from harness.ports import PortLease
from vllm_agent.testing.fake_vllm import cli as fake_vllm


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model_name="tiny"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def sse_events(text: str) -> list[str]:
    events = [block for block in text.split("\n\n") if block.strip()]
    assert all(e.startswith("data: ") for e in events), text
    return [e[len("data: ") :] for e in events]


# ---------------------------------------------------------------------------------------------
# Command line (in process: the script is importable)


def test_parse_args_takes_vllms_flags_in_all_their_forms():
    cfg = fake_vllm.parse_args(
        [
            "serve",
            "/models/m",
            "--tensor_parallel_size",
            "2",
            "--enforce-eager",
            "--served-model-name",
            "a",
            "b",
            "--gpu-memory-utilization=0.9",
            "--host",
            "127.0.0.1",
            "--port",
            "9001",
            "--max-model-len",
            "512",
            "--seed",
            "-1",
            "--trust-remote-code",
            "--fake-mode",
            "hang-after:2,slow-health:0.5",
            "--fake-load-time",
            "0.3",
        ],
        environ={},
    )
    assert cfg["model"] == "/models/m"
    assert cfg["served_model_names"] == ["a", "b"]
    assert (cfg["host"], cfg["port"], cfg["max_model_len"]) == ("127.0.0.1", 9001, 512)
    assert cfg["modes"] == {"hang-after": 2.0, "slow-health": 0.5}
    assert cfg["load_time"] == 0.3
    # Known to vLLM, of no use to the fake: `_` for `-`, `--flag=value` and a negative value too.
    assert cfg["ignored_flags"] == [
        "--enforce-eager",
        "--gpu-memory-utilization",
        "--seed",
        "--tensor-parallel-size",
        "--trust-remote-code",
    ]
    # argparse's abbreviations, and vLLM's dotted keys of a JSON option.
    cfg = fake_vllm.parse_args(["m", "--max-model", "64", "--compilation-config.level", "3", "-O3"], environ={})
    assert cfg["max_model_len"] == 64
    assert cfg["ignored_flags"] == ["--compilation-config", "--optimization-level"]


def test_parse_args_defaults_env_and_flags_winning():
    cfg = fake_vllm.parse_args(["--model", "org/m"], environ={})
    assert cfg["served_model_names"] == ["org/m"]
    assert cfg["port"] == 8000 and cfg["load_time"] == 0.5 and cfg["modes"] == {}
    env = {"FAKE_VLLM_MODE": "crash-after-requests:3", "FAKE_VLLM_LOAD_TIME": "0.1"}
    cfg = fake_vllm.parse_args(["--model", "m"], environ=env)
    assert cfg["modes"] == {"crash-after-requests": 3} and cfg["load_time"] == 0.1
    cfg = fake_vllm.parse_args(["--model", "m", "--fake-mode", "ok", "--fake-load-time", "2"], environ=env)
    assert cfg["modes"] == {} and cfg["load_time"] == 2.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--fake-mode", "explode"],
        ["--fake-mode", "hang-after"],
        ["--fake-mode", "hang-after:soon"],
        ["--fake-mode", "exit-at-start:1"],
        ["--port", "eighty"],
        ["--port"],
        ["serve", "m", "extra"],
        ["--no-such-flag"],
        ["--enforce-eager=yes"],
        ["--max", "3"],
        ["--fake-no-such-thing", "1"],
    ],
)
def test_parse_args_rejects_bad_values(argv):
    with pytest.raises(fake_vllm.UsageError):
        fake_vllm.parse_args(argv, environ={})


def test_bad_command_line_exits_2_at_once():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--fake-mode", "explode"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert "unknown --fake-mode" in result.stderr


def test_the_flag_list_is_vllms_and_refuses_a_misspelt_flag():
    flags = fake_vllm.load_flags()
    assert flags["--enforce-eager"] == "0" and flags["--max-model-len"] == "1"
    assert flags["--served-model-name"] == "+" and flags["-tp"] == "1"
    assert len([f for f in flags if not f.startswith("--fake-")]) > 300  # the whole parser, not a sample
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "m", "--enforce-eagre"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "api_server.py: error: unrecognized arguments: --enforce-eagre"


# ---------------------------------------------------------------------------------------------
# Start-up


def test_refused_while_loading_then_ready_with_engine_core_child(start_fake):
    # Run as an executable (shebang), like a unit's ExecStart=, with flags it does not know.
    fake = start_fake(
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.9",
        "--enforce-eager",
        "--max-model-len",
        "256",
        load_time=0.6,
        argv0=[str(SCRIPT / "__main__.py")],
    )
    engine = fake.engine_pid()  # written once the port is bound, before loading
    with pytest.raises(httpx.ConnectError):
        fake.get("/health")
    fake.wait_ready()
    assert fake.get("/health").status_code == 200
    out = fake.stdout
    assert "Starting to load model /models/tiny..." in out and "Loading weights took" in out
    assert f"Starting vLLM API server on http://127.0.0.1:{fake.port}" in out
    assert out.index("Loading weights took") < out.index("INFO:     Application startup complete.")
    assert '"GET /health HTTP/1.1" 200 OK' in out
    # The engine core child: named like vLLM's, a child of the API server.
    assert comm(engine) == ENGINE_COMM
    assert Path(f"/proc/{engine}/cmdline").read_bytes().split(b"\0")[0] == b"VLLM::EngineCore"
    ppid = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{engine}/status").read_text().splitlines()
            if line.startswith("PPid:")
        )
    )
    assert ppid == fake.proc.pid


@pytest.mark.parametrize(
    "argv0",
    [
        # By path, isolated and without site-packages: the standard library alone, as a machine's
        # python3 runs it where the project is not installed (the system tier does).
        pytest.param([sys.executable, "-I", "-S", str(SCRIPT)], id="directory-stdlib-only"),
        pytest.param([sys.executable, "-m", "vllm_agent.testing.fake_vllm"], id="module"),
    ],
)
def test_every_way_of_starting_it_serves_with_its_engine_core(start_fake, argv0):
    fake = start_fake(load_time=0.1, argv0=argv0)
    fake.wait_ready()
    answer = fake.post("/v1/completions", {"prompt": "Say", "max_tokens": 2}).json()
    assert answer["choices"][0]["text"] == " hello world"
    assert comm(fake.engine_pid()) == ENGINE_COMM


def test_unwritable_pid_file_fails_without_leaving_the_engine_core(tmp_path):
    with PortLease() as lease:
        result = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--model",
                "m",
                "--host",
                "127.0.0.1",
                "--port",
                str(lease.port),
                "--fake-engine-pid-file",
                str(tmp_path / "no" / "such"),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert result.returncode == 1
    assert "cannot write --fake-engine-pid-file" in result.stderr
    pid = (
        int(result.stdout.split("(EngineCore_DP0 pid=")[1].split(")")[0])
        if "(EngineCore_DP0 pid=" in result.stdout
        else None
    )
    if pid is not None:
        assert not alive(pid)


def test_mode_from_environment(start_fake):
    fake = start_fake(env={"FAKE_VLLM_MODE": "exit-at-start"})
    assert fake.wait_exit() == 1


# ---------------------------------------------------------------------------------------------
# The API of a healthy engine


def test_models_version_and_unknown_paths(ready_fake):
    models = ready_fake.get("/v1/models")
    assert models.status_code == 200
    body = models.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tiny"]
    assert body["data"][0]["root"] == "/models/tiny"
    assert body["data"][0]["owned_by"] == "vllm"
    assert body["data"][0]["max_model_len"] == 128
    assert ready_fake.get("/version").json() == {"version": "0.0.0-fake"}
    missing = ready_fake.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert ready_fake.get("/v1/completions").status_code == 405
    assert ready_fake.get("/health").content == b""


def test_completion_returns_text_and_usage(ready_fake):
    resp = ready_fake.post(
        "/v1/completions", {"model": "tiny", "prompt": "Say hello", "max_tokens": 5, "temperature": 0}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["text"] == " hello world this is a"
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5 and usage["prompt_tokens"] > 0
    # Deterministic; the model may be left out; output is capped at 16 tokens ("stop").
    again = ready_fake.post("/v1/completions", {"prompt": "Say hello", "max_tokens": 5}).json()
    assert again["choices"][0]["text"] == choice["text"]
    long = ready_fake.post("/v1/completions", {"prompt": "x", "max_tokens": 100}).json()
    assert long["usage"]["completion_tokens"] == 16
    assert long["choices"][0]["finish_reason"] == "stop"


def test_chat_completion_returns_message_and_usage(ready_fake):
    resp = ready_fake.post(
        "/v1/chat/completions",
        {
            "model": "tiny",
            "max_completion_tokens": 3,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"] == "hello world this"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3


def test_streaming_completion_ends_with_done(ready_fake):
    with httpx.stream(
        "POST",
        ready_fake.base + "/v1/completions",
        timeout=5,
        json={"model": "tiny", "prompt": "a", "max_tokens": 4, "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 4
    assert "".join(c["choices"][0]["text"] for c in chunks) == " hello world this is"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]


def test_streaming_chat_has_role_delta_usage_and_done(ready_fake):
    with httpx.stream(
        "POST",
        ready_fake.base + "/v1/chat/completions",
        timeout=5,
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "hello world this"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


BAD_REQUESTS = [
    ("/v1/completions", {"model": "tiny"}, 400),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 0}, 400),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": "many"}, 400),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 500}, 400),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "temperature": -1}, 400),
    ("/v1/completions", b"{not json", 400),
    ("/v1/completions", {"model": "other", "prompt": "a"}, 404),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"content": "no role"}]}, 400),
    ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, 400),
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "a"}]}, 404),
]


def test_bad_requests_are_rejected_like_vllm(ready_fake):
    for path, body, status in BAD_REQUESTS:
        case = f"{path} {body!r}"
        if isinstance(body, bytes):
            resp = httpx.post(
                ready_fake.base + path, content=body, timeout=5, headers={"content-type": "application/json"}
            )
        else:
            resp = ready_fake.post(path, body)
        assert resp.status_code == status, f"{case}: {resp.text}"
        error = resp.json()["error"]
        assert error["code"] == status, case
        assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError"), case
        if status == 404:
            assert error["message"] == "The model `other` does not exist.", case
    # Nothing of that reached the engine.
    assert metric(ready_fake.get("/metrics").text, "vllm:prompt_tokens_total") == 0


def test_metrics_use_vllm_names_and_counters_move(ready_fake):
    before = ready_fake.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    text = before.text
    for name, kind in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
    ]:
        assert f"# TYPE {name} {kind}" in text and f"# HELP {name} " in text
    assert 'vllm:e2e_request_latency_seconds_bucket{model_name="tiny",engine="0",le="+Inf"}' in text
    usage = ready_fake.post("/v1/completions", {"prompt": "one two", "max_tokens": 7}).json()["usage"]
    after = ready_fake.get("/metrics").text
    assert metric(after, "vllm:generation_tokens_total") == metric(text, "vllm:generation_tokens_total") + 7
    assert (
        metric(after, "vllm:prompt_tokens_total") == metric(text, "vllm:prompt_tokens_total") + usage["prompt_tokens"]
    )
    assert (
        metric(after, "vllm:e2e_request_latency_seconds_count")
        == metric(text, "vllm:e2e_request_latency_seconds_count") + 1
    )
    assert metric(after, "vllm:num_requests_running") == 0


def test_concurrent_requests_are_served_in_parallel(start_fake):
    fake = start_fake("--fake-token-latency", "0.05")
    fake.wait_ready()
    results: list[int] = []
    during: list[float] = []

    def one():
        r = fake.post("/v1/completions", {"prompt": "p", "max_tokens": 6})
        results.append(r.json()["usage"]["completion_tokens"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.15)
    during.append(metric(fake.get("/metrics").text, "vllm:num_requests_running"))
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - t0
    assert results == [6] * 8
    assert elapsed < 8 * 6 * 0.05 / 2, elapsed  # a serial server would need 2.4 s
    assert during[0] >= 2
    assert metric(fake.get("/metrics").text, "vllm:generation_tokens_total") == 48


def test_api_key_protects_v1_only(start_fake):
    fake = start_fake("--api-key", "s3cret")
    fake.wait_ready()
    assert fake.get("/v1/models").status_code == 401
    assert fake.get("/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert fake.get("/health").status_code == 200
    assert fake.get("/metrics").status_code == 200


# ---------------------------------------------------------------------------------------------
# Failure modes


def test_exit_at_start_fails_with_engine_core_error(start_fake):
    fake = start_fake("--fake-mode", "exit-at-start")
    engine = fake.engine_pid()
    assert fake.wait_exit() == 1
    assert "RuntimeError: Engine core initialization failed. See root cause above." in fake.stderr
    assert "Application startup complete." not in fake.stdout
    wait_until(lambda: not alive(engine), 2, "the EngineCore child to be stopped")


def test_busy_port_fails_with_errno_98(start_fake):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        fake = start_fake(port=holder.getsockname()[1])
        assert fake.wait_exit() == 1
    assert "[Errno 98] Address already in use" in fake.stderr
    assert fake.stderr.startswith("ERROR ")
    assert not fake.pid_file.exists()  # fails before it starts an engine


def test_port_in_use_mode(start_fake):
    fake = start_fake("--fake-mode", "port-in-use")
    assert fake.wait_exit() == 1
    assert "[Errno 98] Address already in use" in fake.stderr


def test_engine_death_gives_503_then_exit_0(start_fake):
    fake = start_fake("--fake-mode", "engine-death-after:0.2")
    fake.wait_ready()
    engine = fake.engine_pid()
    wait_until(lambda: fake.get("/health").status_code == 503, 3, "/health to answer 503")
    assert not alive(engine)
    try:  # generation fails while the server winds down (it may already be gone)
        assert fake.post("/v1/completions", {"prompt": "a", "max_tokens": 1}).status_code == 500
    except httpx.TransportError:
        pass
    assert fake.wait_exit(5) == 0
    assert "EngineDeadError" in fake.stderr


def test_hang_keeps_health_200_freezes_metrics_and_generation_never_answers(start_fake):
    fake = start_fake("--fake-mode", "hang-after:0.5")
    fake.wait_ready()
    assert fake.post("/v1/completions", {"prompt": "a", "max_tokens": 5}).status_code == 200
    wait_until(lambda: "fake hang" in fake.stdout, 3, "the engine to hang")
    frozen = fake.get("/metrics").text
    # Wedged in the middle of a step: one request runs, for ever; nothing else moves.
    assert metric(frozen, "vllm:num_requests_running") == 1
    assert metric(frozen, "vllm:generation_tokens_total") == 5
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        fake.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1}, timeout=1)
    assert time.monotonic() - t0 < 2
    assert fake.get("/health").status_code == 200
    assert fake.get("/metrics").text == frozen  # the request that hung did not count: gauges froze
    # A streamed request gets its headers, then nothing.
    with httpx.stream(
        "POST", fake.base + "/v1/completions", timeout=1, json={"prompt": "a", "max_tokens": 1, "stream": True}
    ) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            r.read()
    # A hung engine still stops on SIGTERM, with 0, at once.
    engine = fake.engine_pid()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit(2) == 0
    wait_until(lambda: not alive(engine), 1, "the EngineCore child to be gone")


def test_a_stopped_engine_core_pauses_generation_until_it_continues(start_fake):
    fake = start_fake("--fake-token-latency", "0.05")
    fake.wait_ready()
    core = fake.engine_pid()
    os.kill(core, signal.SIGSTOP)
    try:
        time.sleep(0.3)  # the fake looks at its EngineCore every 50 ms
        with pytest.raises(httpx.ReadTimeout):
            fake.post("/v1/completions", {"prompt": "a", "max_tokens": 2}, timeout=1)
        assert metric(fake.get("/metrics").text, "vllm:num_requests_running") == 0
        assert fake.get("/health").status_code == 200
    finally:
        os.kill(core, signal.SIGCONT)
    assert fake.post("/v1/completions", {"prompt": "a", "max_tokens": 2}).status_code == 200


def test_crash_after_requests_exits_1_after_the_nth(start_fake):
    fake = start_fake("--fake-mode", "crash-after-requests:2")
    fake.wait_ready()
    engine = fake.engine_pid()
    for _ in range(2):
        assert fake.post("/v1/completions", {"prompt": "a", "max_tokens": 2}).status_code == 200
    assert fake.wait_exit() == 1
    with pytest.raises(httpx.TransportError):
        fake.get("/health")
    assert alive(engine)  # an abrupt death leaves the engine core behind, as with SIGKILL


def test_crash_after_zero_requests_drops_the_first_one(start_fake):
    fake = start_fake("--fake-mode", "crash-after-requests:0")
    fake.wait_ready()
    with pytest.raises(httpx.TransportError):
        fake.post("/v1/completions", {"prompt": "a", "max_tokens": 2})
    assert fake.wait_exit() == 1


def test_crash_after_seconds(start_fake):
    fake = start_fake("--fake-mode", "crash-after:0.3")
    fake.wait_ready()
    assert fake.wait_exit() == 1


def test_slow_health(start_fake):
    fake = start_fake("--fake-mode", "slow-health:0.4")
    fake.wait_ready()
    t0 = time.monotonic()
    assert fake.get("/health").status_code == 200
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert fake.get("/version").status_code == 200
    assert time.monotonic() - t0 < 0.4


# ---------------------------------------------------------------------------------------------
# Signals


def test_sigterm_shuts_down_with_0_and_stops_engine_core(start_fake):
    fake = start_fake()
    fake.wait_ready()
    engine = fake.engine_pid()
    t0 = time.monotonic()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit() == 0
    assert time.monotonic() - t0 < 1
    assert "Shutting down" in fake.stdout
    wait_until(lambda: not alive(engine), 1, "the EngineCore child to be gone")


def test_sigterm_while_loading_exits_0(start_fake):
    fake = start_fake(load_time=5)
    engine = fake.engine_pid()
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.wait_exit(2) == 0
    wait_until(lambda: not alive(engine), 1, "the EngineCore child to be gone")


def test_sigkill_of_server_leaves_engine_core_alive(start_fake):
    fake = start_fake()
    fake.wait_ready()
    engine = fake.engine_pid()
    fake.proc.kill()
    assert fake.wait_exit() == -signal.SIGKILL
    time.sleep(0.2)
    assert alive(engine) and comm(engine) == ENGINE_COMM
    # The fixture kills it; prove here that it does.
    fake.cleanup()
    assert not alive(engine)
