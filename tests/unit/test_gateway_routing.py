"""The gateway's pure parts: config names and errors, routing, Retry-After, stream continuation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vllm_agent.config.directory import load_config
from vllm_agent.config.schema import GatewayRoute
from vllm_agent.errors import ConfigError
from vllm_agent.gateway.migration import Stream, continuation, not_migratable
from vllm_agent.gateway.routing import UNKNOWN_ETA, Table
from vllm_agent.gateway.view import gateway_rows, load_seconds, started_at


def problems(tmp_path: Path, agent: str, deployment: str = 'model = "org/m"\n') -> list[str]:
    (tmp_path / "agent.toml").write_text(agent)
    (tmp_path / "models.d").mkdir(exist_ok=True)
    (tmp_path / "models.d" / "a.toml").write_text(deployment)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    return caught.value.problems


def test_gateway_settings_default_to_the_documented_names(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("")
    gateway = load_config(tmp_path).settings.gateway
    assert (gateway.listen, gateway.migration_limit, gateway.retries, gateway.routes) == ("127.0.0.1:8080", 3, 2, [])


def test_bad_gateway_settings_are_one_line_each_naming_file_and_key(tmp_path: Path) -> None:
    agent = (
        '[gateway]\nlisten = "localhost"\nmigration_limit = -1\n'
        '[[gateway.routes]]\nmatch = "llama-("\nto = ["x"]\n[[gateway.routes]]\nmatch = "a"\nto = []\nfalback = []\n'
    )
    found = problems(tmp_path, agent, 'model = "org/m"\naliases = ["two words"]\nfallback = "b"\n')
    assert found == [
        "agent.toml: gateway.listen: must be HOST:PORT with a port of 1 to 65535, got 'localhost'",
        "agent.toml: gateway.migration_limit: must be >= 0, got -1",
        "agent.toml: gateway.routes[0].match: not a valid regular expression: missing ), unterminated subpattern "
        "at position 6, got 'llama-('",
        "agent.toml: gateway.routes[1].to: must not be empty, got []",
        "agent.toml: gateway.routes[1].falback: unknown key; did you mean 'fallback'?",
        "models.d/a.toml: aliases: each name must be 1 to 200 characters without spaces, got 'two words'",
        "models.d/a.toml: fallback: must be a list, got 'b'",
    ]


def row(name: str, state: str = "ready", port: int = 9000, **extra: object) -> dict[str, object]:
    return {"name": name, "served": extra.pop("served", name), "state": state, "port": port} | extra


def test_exact_names_and_aliases_form_pools_before_patterns() -> None:
    table = Table.build(
        [row("a1", served="llama"), row("a2", served="llama", aliases=["default"]), row("q", aliases=["llama-x"])],
        [GatewayRoute(match="llama.*", to=["q"])],
    )
    assert table.resolve("llama").pool == ("a1", "a2")
    assert table.resolve("default").pool == ("a2",)
    assert table.resolve("llama-x").pool == ("q",), "an alias wins over a pattern that also matches"
    assert table.resolve("llama-3").pool == ("q",)
    assert table.resolve("gpt") is None


def test_only_ready_members_are_candidates_fewest_outstanding_first_then_the_fallback_chain() -> None:
    table = Table.build(
        [
            row("a", served="m", fallback=["small"]),
            row("b", served="m"),
            row("c", served="m", state="starting"),
            row("small", state="ready"),
        ]
    )
    plan = table.resolve("m")
    assert [m.name for m in table.candidates(plan, {"a": 3, "b": 1})] == ["b", "a", "small"]
    assert [m.name for m in table.candidates(plan, {}, exclude=["a", "b"])] == ["small"]
    assert [m.name for m in table.candidates(plan, {}, exclude=["a"], pool_only=True)] == ["b"]


def test_retry_after_comes_from_the_starting_deployments_last_load_time() -> None:
    table = Table.build(
        [
            row("slow", served="m", state="starting", started_at=1000.0, load_seconds=100.0),
            row("fast", served="m", state="starting", started_at=1000.0, load_seconds=30.0),
            row("dead", served="d", state="crash-loop"),
            row("new", served="n", state="starting"),
        ]
    )
    assert table.retry_after(table.resolve("m"), now=1010.0) == 20
    assert table.retry_after(table.resolve("m"), now=1500.0) == 1, "overdue: try again soon"
    assert table.retry_after(table.resolve("d"), now=1010.0) is None, "nothing starting: waiting would not help"
    assert table.retry_after(table.resolve("n"), now=1010.0) == UNKNOWN_ETA
    assert table.routable() == []


def test_the_daemons_rows_carry_load_time_and_start_from_its_transitions(tmp_path: Path) -> None:
    transitions = [
        {"kind": "starting", "at": 100.0},
        {"kind": "ready", "at": 140.0},
        {"kind": "restarted", "at": 200.0},
    ]
    assert load_seconds(transitions) == 40.0 and started_at(transitions) == 200.0
    (tmp_path / "models.d").mkdir()
    (tmp_path / "models.d" / "x.toml").write_text(
        'model = "org/m"\nport = 9001\nhost = "0.0.0.0"\nserved_model_name = "m"\naliases = ["y"]\nfallback = ["z"]\n'
    )
    config = load_config(tmp_path)
    rows = gateway_rows(config.deployments, [{"name": "x", "state": "starting", "transitions": transitions}])
    assert rows == [
        {
            "name": "x",
            "served": "m",
            "state": "starting",
            "host": "127.0.0.1",
            "port": 9001,
            "aliases": ["y"],
            "fallback": ["z"],
            "started_at": 200.0,
            "load_seconds": 40.0,
        }
    ]


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_a_continued_chat_stream_reads_as_one_stream_with_usage_summed() -> None:
    stream = Stream("chat")
    stream.begin_segment()
    first = sse({"id": "A", "created": 1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    first += sse({"id": "A", "created": 1, "choices": [{"index": 0, "delta": {"content": "hello"}}]})
    out = stream.relay(first[:30]) + stream.relay(first[30:])  # split mid-event: held until whole
    assert out == first
    stream.absorb()  # the first stream is read only when needed
    assert stream.text == "hello" and stream.tokens == 1
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    again = continuation("chat", body, stream, "served")
    assert again["messages"][-1] == {"role": "assistant", "content": "hello"}
    assert (again["continue_final_message"], again["add_generation_prompt"], again["max_tokens"]) == (True, False, 9)
    assert again["model"] == "served" and body["max_tokens"] == 10
    stream.begin_segment()
    role = sse({"id": "B", "created": 2, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert stream.relay(role) == b"", "the second role delta is not shown"
    out = stream.relay(sse({"id": "B", "created": 2, "choices": [{"index": 0, "delta": {"content": " world"}}]}))
    assert json.loads(out[6:])["id"] == "A"
    usage = stream.relay(
        sse({"id": "B", "created": 2, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}})
    )
    assert json.loads(usage[6:])["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


def test_a_completion_continues_from_prompt_plus_text() -> None:
    stream = Stream("completions")
    stream.begin_segment()
    stream.relay(sse({"id": "A", "created": 1, "choices": [{"index": 0, "text": " one"}]}))
    again = continuation("completions", {"model": "m", "prompt": "Count:"}, stream, "m")
    assert again["prompt"] == "Count: one" and "max_tokens" not in again


@pytest.mark.parametrize(
    ("kind", "body", "why"),
    [
        ("completions", {"prompt": "x", "n": 2}, "n > 1"),
        ("completions", {"prompt": "x", "logprobs": 2}, "logprobs"),
        ("chat", {"messages": [{}], "response_format": {"type": "json_schema"}}, "structured"),
        ("chat", {"messages": [{}], "guided_regex": "a+"}, "guided"),
        ("completions", {"prompt": [1, 2, 3]}, "token ids"),
        ("completions", {"prompt": "x", "echo": True}, "echo"),
    ],
)
def test_requests_that_cannot_be_continued_faithfully_are_named(kind: str, body: dict, why: str) -> None:
    assert why in (not_migratable(kind, body) or "")


def test_plain_requests_and_text_response_format_can_be_continued() -> None:
    assert not_migratable("chat", {"messages": [{}], "response_format": {"type": "text"}}) is None
    assert not_migratable("completions", {"prompt": "x", "n": 1}) is None


def test_a_tool_call_under_way_stops_a_continuation() -> None:
    stream = Stream("chat")
    stream.begin_segment()
    stream.relay(sse({"id": "A", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]}))
    assert "tool call" in (stream.why_not_continued() or "")


def test_names_that_lead_nowhere_are_named_with_their_file_and_key() -> None:
    table = Table.build(
        [row("a", served="m", fallback=["gone"]), row("b", aliases=["bee"])],
        [GatewayRoute(match="x.*", to=["bee", "typo"], fallback=["m"])],
    )
    assert table.unresolved() == [
        "agent.toml: gateway.routes[0].to: no deployment answers to 'typo'",
        "models.d/a.toml: fallback: no deployment answers to 'gone'",
    ]


def test_external_deployments_are_routed_only_over_plain_http_at_the_root(tmp_path: Path) -> None:
    (tmp_path / "models.d").mkdir()
    for name, url in (("plain", "http://10.0.0.5:9000"), ("tls", "https://api.example.com"), ("sub", "http://h/v2")):
        (tmp_path / "models.d" / f"{name}.toml").write_text(f'model = "org/m"\nmode = "external"\nurl = "{url}"\n')
    config = load_config(tmp_path)
    statuses = [{"name": name, "state": "ready"} for name in ("plain", "tls", "sub")]
    rows = {row["name"]: row for row in gateway_rows(config.deployments, statuses)}
    assert (rows["plain"]["state"], rows["plain"]["host"], rows["plain"]["port"]) == ("ready", "10.0.0.5", 9000)
    assert rows["tls"]["state"] == rows["sub"]["state"] == "unroutable"


def test_bad_key_files_are_refused_each_naming_file_and_key(tmp_path: Path) -> None:
    from vllm_agent.gateway.keys import load_keys

    keys = tmp_path / "gateway"
    keys.mkdir()
    (keys / "short.toml").write_text('key = "abc"\nmodels = ["*"]\n')
    (keys / "nomodels.toml").write_text('key = "0123456789abcdef"\nmodels = []\n')
    (keys / "typo.toml").write_text('key = "0123456789abcdefg"\nmodels = ["*"]\nmax_concurency = 2\n')
    (keys / "regex.toml").write_text('key = "0123456789abcdefgh"\nmodels = ["llama-("]\n')
    (keys / "good.toml").write_text('key = "0123456789abcdefghi"\nmodels = ["*"]\nmax_concurrency = 2\n')
    (keys / "twin.toml").write_text('key = "0123456789abcdefghi"\nmodels = ["*"]\n')
    with pytest.raises(ConfigError) as caught:
        load_keys(tmp_path)
    lines = caught.value.problems
    assert len(lines) == 5 and all(line.startswith(str(keys)) for line in lines)
    assert "nomodels.toml: models: must be a non-empty list" in lines[0]
    assert "regex.toml: models: 'llama-(' is not a valid regular expression" in lines[1]
    assert "short.toml: key: must be a string of at least 16 characters" in lines[2]
    assert "twin.toml: key: the same secret as good.toml" in lines[3]
    assert "typo.toml: max_concurency: unknown key" in lines[4]
    assert not any("0123456789" in line for line in lines), "a secret is never printed"
