"""Mid-stream migration: follow a stream, and continue it on another engine when its engine dies.

Pure code. ``Stream`` reads the SSE events relayed to the client and keeps what a continuation
needs (the text so far, how many tokens). ``continuation`` builds the request that continues it:
completions resend the prompt plus the text so far; chat sends the partial assistant message
with vLLM's ``continue_final_message`` (and ``add_generation_prompt = false``). Either way
``max_tokens`` shrinks by what was generated. ``Stream.relay`` rewrites the continuation's events
so the client sees one stream: the first stream's id and creation time, no second role delta,
usage summed.

Requests that cannot be continued faithfully are named by ``not_migratable``: several choices,
logprobs, guided or structured output, token-id or batched prompts, echo, tools mid-call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Request keys that make a continuation differ from the uninterrupted answer.
_GUIDED = (
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "response_format",
)
DONE = b"data: [DONE]\n\n"


def not_migratable(kind: str, body: dict[str, Any]) -> str | None:
    """Why a stream of this request cannot be continued on another engine; None when it can."""
    if (body.get("n") or 1) != 1 or (body.get("best_of") or 1) != 1:
        return "n > 1"
    if body.get("logprobs") or body.get("top_logprobs") or body.get("prompt_logprobs"):
        return "logprobs were requested"
    for key in _GUIDED:
        value = body.get(key)
        if value and not (key == "response_format" and isinstance(value, dict) and value.get("type") == "text"):
            return f"guided or structured output ({key})"
    if kind == "completions":
        if not isinstance(body.get("prompt"), str):
            return "the prompt is not one string (token ids or a batch)"
        if body.get("echo") or body.get("suffix"):
            return "echo or suffix was requested"
    elif kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "no messages"
    return None


def _max_tokens_key(kind: str, body: dict[str, Any]) -> str | None:
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        return "max_completion_tokens"
    return "max_tokens" if body.get("max_tokens") is not None else None


@dataclass
class Stream:
    """What the client has received of one streamed answer."""

    kind: str  # "completions" or "chat"
    text: str = ""
    tokens: int = 0  # content events seen: vLLM streams one token per event
    ident: str = ""
    created: int = 0
    role_sent: bool = False
    tool_call: bool = False  # a tool call began: its arguments cannot be continued faithfully
    finished: str | None = None  # finish_reason, once an event carried one
    segments: int = 0  # upstream streams so far (1 + migrations)
    earlier_tokens: int = 0  # tokens of the segments before the current one
    _done: bool = False
    _pending: bytearray = field(default_factory=bytearray)  # a partial event, held back
    _unread: bytearray = field(default_factory=bytearray)  # relayed as is, parsed only when needed

    def begin_segment(self) -> None:
        self.absorb()
        self.segments += 1
        self.earlier_tokens = self.tokens
        self._pending.clear()

    @property
    def done(self) -> bool:
        """[DONE] was relayed."""
        return self._done or self._unread.endswith(DONE)

    def relay(self, data: bytes) -> bytes:
        """The bytes to send the client for ``data`` read from the upstream (whole events only;
        a partial event waits for its end). The first stream is passed through unparsed (the
        common path stays cheap) and read by ``absorb`` only if its engine dies."""
        self._pending += data
        if self.segments == 1:
            end = self._pending.rfind(b"\n\n")
            if end < 0:
                return b""
            out = bytes(self._pending[: end + 2])
            del self._pending[: end + 2]
            self._unread += out
            return out
        out = bytearray()
        while True:
            end = self._pending.find(b"\n\n")
            if end < 0:
                return bytes(out)
            event = bytes(self._pending[: end + 2])
            del self._pending[: end + 2]
            out += self._event(event)

    def absorb(self) -> None:
        """Read what was passed through unparsed: the text so far, tokens, the finish reason."""
        unread = bytes(self._unread)
        self._unread.clear()
        for event in unread.split(b"\n\n"):
            if event:
                self._event(event + b"\n\n")

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: "):
            return event
        payload = event[6:].strip()
        if payload == b"[DONE]":
            self._done = True
            return event
        try:
            chunk = json.loads(payload)
        except ValueError:
            return event
        if not isinstance(chunk, dict):
            return event
        continued = self.segments > 1
        if not self.ident:
            self.ident, self.created = str(chunk.get("id", "")), int(chunk.get("created") or 0)
        changed = False
        if continued:
            chunk["id"], chunk["created"] = self.ident, self.created
            changed = True
        kept = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            if self._choice(choice, continued):
                kept.append(choice)
            else:
                changed = True
        usage = chunk.get("usage")
        if continued and isinstance(usage, dict) and usage:
            chunk["usage"] = self._summed(usage)
        if not kept and chunk.get("choices") and not usage:
            return b""  # only a repeated role delta
        if not changed:
            return event
        chunk["choices"] = kept
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _choice(self, choice: dict[str, Any], continued: bool) -> bool:
        """Record a choice; False when the client must not see it (a second role delta)."""
        if choice.get("finish_reason"):
            self.finished = str(choice["finish_reason"])
        if self.kind == "chat":
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                self.tool_call = True
            content = delta.get("content")
            if "role" in delta and not content and not choice.get("finish_reason"):
                if continued or self.role_sent:
                    return False
                self.role_sent = True
                return True
            if content:
                self.text += content
                self.tokens += 1
            if continued and "role" in delta:
                delta.pop("role")
            return True
        text = choice.get("text")
        if text:
            self.text += text
            self.tokens += 1
        return True

    def _summed(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage counted the text so far as prompt: count it as completion."""
        before = self.earlier_tokens
        prompt = max(0, int(usage.get("prompt_tokens") or 0) - before)
        completion = int(usage.get("completion_tokens") or 0) + before
        return {**usage, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def why_not_continued(self) -> str | None:
        self.absorb()
        if self.tool_call:
            return "a tool call was being generated"
        return None


def continuation(kind: str, body: dict[str, Any], stream: Stream, served: str) -> dict[str, Any]:
    """The request that continues ``stream`` on an engine serving ``served``."""
    stream.absorb()
    new = dict(body)
    new["model"] = served
    key = _max_tokens_key(kind, body)
    if key is not None:
        new[key] = max(1, int(body[key]) - stream.tokens)
    if kind == "completions":
        new["prompt"] = str(body["prompt"]) + stream.text
        return new
    messages = list(body["messages"])
    last = messages[-1] if messages else None
    if body.get("continue_final_message") and isinstance(last, dict) and last.get("role") == "assistant":
        messages[-1] = {**last, "content": str(last.get("content") or "") + stream.text}
    else:
        messages.append({"role": "assistant", "content": stream.text})
    new["messages"] = messages
    new["continue_final_message"] = True
    new["add_generation_prompt"] = False
    return new


def error_event(message: str, code: int = 503, kind: str = "ServiceUnavailableError") -> bytes:
    """An SSE error event in vLLM's shape, then [DONE]: the client learns the answer is cut."""
    body = {"error": {"object": "error", "message": message, "type": kind, "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n" + DONE
