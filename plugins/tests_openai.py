"""Test runner ``openai-smoke``, run by default: does the engine serve the OpenAI API correctly?

Five checks, each its own outcome and its own deadline, all run (a failure does not hide the
others; only a refused connection skips the rest, with the same detail):

* ``models``: /v1/models lists the served model name;
* ``completion``: /v1/completions (max_tokens 4) returns a choice with text and a well-formed usage;
* ``chat``: /v1/chat/completions returns choices[0].message.content and a well-formed usage;
* ``chat-stream``: the same with stream=true: SSE ``data:`` chat.completion.chunk events, then
  ``data: [DONE]``;
* ``invalid-request``: max_tokens=-1, and a chat request without messages, each get a 4xx, not
  a 5xx (an engine that crashes on bad input is one bad client away from an outage).

```toml
[[tests]]
runner = "openai-smoke"
deadline = 30                  # seconds per check
prompt = "Hello"
checks = ["models", "completion", "invalid-request"]   # e.g. a base model without a chat template
```

Every detail is one line that starts with the check's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from vllm_agent import engine_http, hookimpl
from vllm_agent.plugin_api import AgentSettings, EngineTarget, TestContext, TestOutcome, TestRunner, TestSpec

CHECKS = ("models", "completion", "chat", "chat-stream", "invalid-request")
OPTIONS = ("deadline", "prompt", "checks")
DEFAULT_DEADLINE = 30.0
DEFAULT_PROMPT = "Hello"
MAX_TOKENS = 4
MAX_BODY = 1024 * 1024  # a smoke answer is small; more is garbage
MARGIN = 1.0  # seconds left to the launcher's own timeout


class CheckFailed(Exception):
    """A check's verdict: ``detail`` without the check's name, ``body`` what the server sent."""

    def __init__(self, detail: str, body: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.body = body


class Unreachable(CheckFailed):
    """The connection was refused: the remaining checks cannot fare better."""


class OpenAISmoke:
    name = "openai-smoke"

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        options = spec.options
        problems = [
            f"{key}: unknown option for runner {self.name!r} (known: {', '.join(OPTIONS)})"
            for key in sorted(options)
            if key not in OPTIONS
        ]
        deadline = options.get("deadline", DEFAULT_DEADLINE)
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
            problems.append(f"deadline: must be a number of seconds > 0, got {deadline!r}")
        prompt = options.get("prompt", DEFAULT_PROMPT)
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"prompt: must be a non-empty string, got {prompt!r}")
        checks = options.get("checks", list(CHECKS))
        if not isinstance(checks, list) or not checks or not all(isinstance(c, str) for c in checks):
            problems.append(f"checks: must be a non-empty list of check names, got {checks!r}")
        else:
            problems += [f"checks: unknown check {c!r} (known: {', '.join(CHECKS)})" for c in checks if c not in CHECKS]
        return problems

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]:
        label = spec.name or self.name
        problems = self.problems(spec, context)
        if problems:
            return [TestOutcome(name=label, ok=False, detail="; ".join(problems))]
        options = spec.options
        deadline = float(options.get("deadline", DEFAULT_DEADLINE))
        wanted = [check for check in CHECKS if check in options.get("checks", CHECKS)]
        # Stay inside the launcher's wait_for, so that every check reports rather than one timeout.
        budget_end = time.monotonic() + max(spec.timeout - MARGIN, spec.timeout * 0.5)
        outcomes: list[TestOutcome] = []
        unreachable: str | None = None
        probe = Probe(target, str(options.get("prompt", DEFAULT_PROMPT)))
        for check in wanted:
            name = f"{label}/{check}"
            if unreachable:
                outcomes.append(TestOutcome(name=name, ok=False, detail=f"{check}: not run: {unreachable}"))
                continue
            remaining = budget_end - time.monotonic()
            if remaining <= 0:
                detail = f"{check}: not run: the test's timeout ({spec.timeout:g}s) was spent"
                outcomes.append(TestOutcome(name=name, ok=False, detail=detail))
                continue
            if remaining < deadline:
                why = f"what was left of the test's {spec.timeout:g}s timeout"
                outcome, refused = await probe.check(name, check, remaining, why)
            else:
                outcome, refused = await probe.check(name, check, deadline, "the check's deadline")
            if refused:
                unreachable = outcome.detail.split(": ", 1)[1]
            outcomes.append(outcome)
        return outcomes


class Probe:
    """The checks themselves, against one engine."""

    def __init__(self, target: EngineTarget, prompt: str) -> None:
        self.target = target
        self.deadline = DEFAULT_DEADLINE  # the running check's, for its requests
        self.model = target.served_model_name
        self.prompt = prompt

    async def check(self, name: str, check: str, deadline: float, why: str) -> tuple[TestOutcome, bool]:
        """Run one check within ``deadline`` seconds (``why`` that long); also say whether the
        engine refused the connection."""
        method: Callable[[], Awaitable[None]] = getattr(self, "check_" + check.replace("-", "_"))
        started = time.monotonic()
        refused = False
        self.deadline = deadline
        try:
            async with asyncio.timeout(deadline):
                await method()
        except TimeoutError:
            detail, body = f"no complete answer within {_seconds(deadline)}s ({why})", ""
        except CheckFailed as failed:
            detail, body, refused = failed.detail, failed.body, isinstance(failed, Unreachable)
        else:
            return TestOutcome(name, True, "", time.monotonic() - started), False
        return TestOutcome(name, False, f"{check}: {detail}", time.monotonic() - started, body), refused

    # The checks ------------------------------------------------------------------------------

    async def check_models(self) -> None:
        body = await self.request("GET", "/v1/models")
        data = _field(body, "data", list, "")
        ids = [item.get("id") for item in data if isinstance(item, dict)]
        if self.model not in ids:
            listed = ", ".join(repr(i) for i in ids) or "nothing"
            raise CheckFailed(
                f"/v1/models does not list {self.model!r} (it lists {listed}); is served_model_name right?"
            )

    async def check_completion(self) -> None:
        payload = {"model": self.model, "prompt": self.prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
        body = await self.request("POST", "/v1/completions", payload)
        choice = _first_choice(body)
        _field(choice, "text", str, "choices[0].")
        _check_usage(body)

    async def check_chat(self) -> None:
        body = await self.request("POST", "/v1/chat/completions", self._chat_payload())
        message = _field(_first_choice(body), "message", dict, "choices[0].")
        content = message.get("content")
        # A reasoning model may spend all 4 tokens thinking: content None, reasoning text.
        thinking = isinstance(message.get("reasoning_content") or message.get("reasoning"), str)
        if not isinstance(content, str) and not (content is None and thinking):
            raise CheckFailed(f"choices[0].message.content is {_show(content)}, not text", _dump(body))
        _check_usage(body)

    async def check_chat_stream(self) -> None:
        payload = {**self._chat_payload(), "stream": True}
        chunks = 0
        with self._errors("POST", "/v1/chat/completions"):
            async with engine_http.stream(
                "POST", self.target.url + "/v1/chat/completions", **self._options(payload)
            ) as response:
                if response.status != 200:
                    text = (await response.read()).decode("utf-8", errors="replace")
                    raise CheckFailed(_status_detail(response.status, text, "POST /v1/chat/completions"), text)
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise CheckFailed(f"content-type is {kind!r}, not text/event-stream")
                done = False
                size = 0
                async for line in response.lines():
                    size += len(line)
                    if size > MAX_BODY:
                        raise CheckFailed(f"stream longer than {MAX_BODY} bytes without ending")
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event: lines
                    data = line[5:].strip()
                    if done:
                        raise CheckFailed(f"data after [DONE]: {_cut(data)}")
                    if data == "[DONE]":
                        done = True
                        continue
                    chunks += 1
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise CheckFailed(f"event {chunks} is not JSON: {_cut(data)}") from None
                    if not isinstance(event, dict) or event.get("object") != "chat.completion.chunk":
                        got = event.get("object") if isinstance(event, dict) else event
                        raise CheckFailed(f"event {chunks} is not a chat.completion.chunk (object {_show(got)})", data)
                    _field(event, "choices", list, f"event {chunks} ")
        if not chunks:
            raise CheckFailed("the stream held no chat.completion.chunk event")
        if not done:
            raise CheckFailed(f"the stream ended after {chunks} events without 'data: [DONE]'")

    async def check_invalid_request(self) -> None:
        bad = {
            "max_tokens=-1": {**self._chat_payload(), "max_tokens": -1},
            "a chat request without messages": {"model": self.model, "max_tokens": MAX_TOKENS},
        }
        for what, payload in bad.items():
            status, text = await self.send("POST", "/v1/chat/completions", payload)
            if 400 <= status < 500:
                continue
            if status >= 500:
                raise CheckFailed(f"HTTP {status} for {what}, expected a 4xx: {_error_message(text)}", text)
            raise CheckFailed(f"{what} was accepted (HTTP {status}); expected a 4xx", text)

    # Plumbing --------------------------------------------------------------------------------

    def _chat_payload(self) -> dict[str, Any]:
        messages = [{"role": "user", "content": self.prompt}]
        return {"model": self.model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0}

    async def send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, str]:
        """The status and body (at most MAX_BODY) of the answer."""
        with self._errors(method, path):
            response = await engine_http.request(method, self.target.url + path, **self._options(payload))
        return response.status, response.text

    async def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """The JSON body of a 200 answer; CheckFailed for anything else."""
        status, text = await self.send(method, path, payload)
        if status != 200:
            raise CheckFailed(_status_detail(status, text, f"{method} {path}"), text)
        try:
            return json.loads(text)
        except ValueError:
            raise CheckFailed(
                f"{method} {path} answered 200 with a body that is not JSON: {_cut(text)}", text
            ) from None

    def _options(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        """What each request carries: the api key, the running check's deadline, the size bound."""
        return {"json": payload, "headers": self.target.headers, "timeout": self.deadline, "max_body": MAX_BODY}

    def _errors(self, method: str, path: str) -> contextlib.AbstractContextManager[None]:
        return _transport_errors(self.target.url, f"{method} {path}")


@contextlib.contextmanager
def _transport_errors(url: str, what: str) -> Iterator[None]:
    """The client's failures as one line an operator can act on."""
    try:
        yield
    except engine_http.HttpError as err:
        if err.kind == engine_http.CONNECT:
            raise Unreachable(f"cannot connect to {url}: {_cut(err.reason)}; is the engine running?") from None
        if err.kind == engine_http.TIMEOUT:
            raise TimeoutError from err  # the check words it, with its deadline
        if err.kind == engine_http.CLOSED:
            raise CheckFailed(f"{what}: {_cut(err.reason)}; did the engine die?") from None
        raise CheckFailed(f"{what}: {_cut(err.reason)}") from None


def _status_detail(status: int, text: str, what: str) -> str:
    detail = f"HTTP {status} from {what}: {_error_message(text)}"
    if status == 401:
        detail += " (check the api_key credential)"
    elif status == 400 and "chat template" in text.lower():
        detail += " (a base model without a chat template? leave chat and chat-stream out of `checks`)"
    return detail


def _error_message(text: str) -> str:
    """vLLM's ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}``, else the text."""
    try:
        body = json.loads(text)
    except ValueError:
        return _cut(text) or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _cut(str(error["message"]))
        for key in ("error", "detail", "message"):
            if body.get(key):
                return _cut(str(body[key]))
    return _cut(text)


def _first_choice(body: Any) -> dict[str, Any]:
    choices = _field(body, "choices", list, "")
    if not choices:
        raise CheckFailed("choices is an empty list", _dump(body))
    if not isinstance(choices[0], dict):
        raise CheckFailed(f"choices[0] is {_show(choices[0])}, not an object", _dump(body))
    return choices[0]


def _field(body: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(body, dict):
        raise CheckFailed(f"the answer is {_show(body)}, not a JSON object", _dump(body))
    if key not in body:
        raise CheckFailed(f"{where}{key} is missing", _dump(body))
    value = body[key]
    if not isinstance(value, kind):
        raise CheckFailed(f"{where}{key} is {_show(value)}, not {_KINDS.get(kind, kind.__name__)}", _dump(body))
    return value


_KINDS = {list: "a list", dict: "an object", str: "text", int: "an integer"}


def _check_usage(body: dict[str, Any]) -> None:
    usage = _field(body, "usage", dict, "")
    counts = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckFailed(f"usage.{key} is {_show(value)}, not a count", _dump(body))
        counts[key] = value
    prompt, completion, total = counts["prompt_tokens"], counts["completion_tokens"], counts["total_tokens"]
    if total != prompt + completion:
        raise CheckFailed(f"usage.total_tokens {total} != prompt {prompt} + completion {completion}", _dump(body))
    if prompt < 1:
        raise CheckFailed(f"usage.prompt_tokens is {prompt} for a non-empty prompt", _dump(body))
    if not 1 <= completion <= MAX_TOKENS:
        raise CheckFailed(
            f"usage.completion_tokens is {completion}, expected 1 to max_tokens {MAX_TOKENS}", _dump(body)
        )


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {_cut(json.dumps(value) if not isinstance(value, str) else repr(value), 60)}"


def _seconds(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") or "0"


def _cut(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dump(body: Any) -> str:
    try:
        return json.dumps(body, indent=1)[:4096]
    except (TypeError, ValueError):
        return repr(body)[:4096]


@hookimpl
def agent_post_start_tests(settings: AgentSettings) -> Sequence[TestRunner]:
    return [OpenAISmoke()]
