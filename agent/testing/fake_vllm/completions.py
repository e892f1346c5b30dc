"""Generation and its answers, shaped like vLLM 0.32's (serving_completion.py, serving_chat.py):
the JSON bodies of ``/v1/completions`` and ``/v1/chat/completions`` with their ``usage``, and their
SSE streams (a chat stream opens with a role delta per choice; ``usage`` last when asked for).

Generation runs one engine step per token (core_client.py), so a stopped engine stops a stream
mid-way and the counters move as tokens come, not when the answer is complete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from .tokens import token_text


class Generation:
    """One request's run through the engine: its tokens in generation order, the time to the first."""

    def __init__(self, req: dict, cfg: dict, engine, start: float):
        self.req = req
        self.cfg = cfg
        self.engine = engine
        self.start = start
        self.chat = req["kind"] == "chat"
        self.model = cfg["served_model_names"][0]
        self.choices = len(req["prompts"]) * req["n"]
        self.ttft = 0.0
        self.produced = 0  # tokens handed out so far, over all choices

    def tokens(self) -> Iterator[tuple[int, int, str]]:
        """Yield (choice_index, token_index, text) in generation order; sets req["_count"]."""
        req = self.req
        count = min(req["max_tokens"], self.cfg["max_output_tokens"])
        req["_count"] = count
        delay = self.cfg["token_latency"]
        for t in range(count):
            self.engine.step(req, self.choices)  # a stopped or hung engine generates nothing
            if delay:
                time.sleep(delay)
            for c in range(self.choices):
                if not self.ttft:
                    self.ttft = time.monotonic() - self.start
                self.produced += 1
                yield c, t, token_text(req.get("offset", 0) + t, self.chat)


def finish_reason(req: dict) -> str:
    return "length" if req["_count"] == req["max_tokens"] else "stop"


def usage(req: dict, completion_tokens: int) -> dict:
    prompt = sum(req["prompts"]) * req["n"]
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def answer(gen: Generation) -> dict:
    """The whole answer as one JSON body, once every token is generated."""
    req = gen.req
    texts: dict[int, str] = {}
    for c, _t, text in gen.tokens():
        texts[c] = texts.get(c, "") + text
    completion_tokens = req["_count"] * gen.choices
    reason = finish_reason(req)
    if gen.chat:
        choices = [
            {
                "index": c,
                "message": {
                    "role": "assistant",
                    "content": texts.get(c, ""),
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
            }
            for c in range(gen.choices)
        ]
    else:
        choices = [
            {
                "index": c,
                "text": texts.get(c, ""),
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            for c in range(gen.choices)
        ]
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}" if gen.chat else f"cmpl-{uuid.uuid4().hex}",
        "object": "chat.completion" if gen.chat else "text_completion",
        "created": int(time.time()),
        "model": gen.model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage(req, completion_tokens),
    }
    if gen.chat:
        body["prompt_logprobs"] = None
    body["kv_transfer_params"] = None
    return body


def stream(gen: Generation) -> Iterator[dict | str]:
    """The SSE events' payloads, each as it is generated; ``"[DONE]"`` last."""
    req = gen.req
    created = int(time.time())
    ident = f"chatcmpl-{uuid.uuid4().hex}" if gen.chat else f"cmpl-{uuid.uuid4().hex}"
    obj = "chat.completion.chunk" if gen.chat else "text_completion"

    def chunk(choices: list, usage_=None) -> dict:
        out = {"id": ident, "object": obj, "created": created, "model": gen.model, "choices": choices}
        if req["include_usage"]:
            out["usage"] = usage_
        return out

    if gen.chat:
        for c in range(gen.choices):
            yield chunk(
                [{"index": c, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )
    for c, t, text in gen.tokens():
        final = t == req["_count"] - 1
        reason = finish_reason(req) if final else None
        if gen.chat:
            choice = {"index": c, "delta": {"content": text}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": c, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}
        if reason is not None:
            choice["stop_reason"] = None
        yield chunk([choice])
    if req["include_usage"]:
        yield chunk([], usage(req, gen.produced))
    yield "[DONE]"
