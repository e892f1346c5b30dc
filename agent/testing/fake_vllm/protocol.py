"""Request validation as vLLM's OpenAI server does it (vllm/entrypoints/openai/protocol.py and the
serving classes): 400 with vLLM's ``{"error": {...}}`` body for a bad request, 404 for an unknown
model, its messages for a prompt longer than ``--max-model-len``. A valid request becomes the plain
dict that generation reads (``kind``, ``stream``, ``n``, ``prompts`` in tokens, ``max_tokens``...).
"""

from __future__ import annotations

from .tokens import continued_from, count_tokens


class ApiError(Exception):
    def __init__(self, status: int, message: str, err_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.err_type, "param": None, "code": self.status}}


def _check_int(body: dict, key: str, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key}: Input should be a valid integer")
    if minimum is not None and value < minimum:
        raise ApiError(400, f"{key} must be at least {minimum}, got {value}.")
    return value


def _common_checks(body: dict, cfg: dict) -> tuple[bool, bool, int]:
    model = body.get("model")
    if model is not None and model not in cfg["served_model_names"]:
        raise ApiError(404, f"The model `{model}` does not exist.")  # vLLM 0.32 adds " Valid aliases: ..."
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: Input should be a valid boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(400, "stream_options: Input should be a valid dictionary")
        if not stream:
            raise ApiError(400, "Stream options can only be defined when `stream=True`.")
        include_usage = bool(options.get("include_usage"))
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ApiError(400, "temperature: Input should be a valid number")
        if temperature < 0:
            raise ApiError(400, f"temperature must be non-negative, got {temperature}.")
    n = _check_int(body, "n", 1) or 1
    return stream, include_usage, n


def _check_length(prompt_tokens: int, max_tokens: int | None, cfg: dict) -> int:
    limit = cfg["max_model_len"]
    if prompt_tokens >= limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            f"your request has {prompt_tokens} input tokens. Please reduce the "
            "length of the input messages.",
        )
    if max_tokens is None:
        return limit - prompt_tokens
    if prompt_tokens + max_tokens > limit:
        raise ApiError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. "
            f"This model's maximum context length is {limit} tokens and your "
            f"request has {prompt_tokens} input tokens ({max_tokens} > {limit} - "
            f"{prompt_tokens}).",
        )
    return max_tokens


def parse_completion(body: dict, cfg: dict) -> dict:
    stream, include_usage, n = _common_checks(body, cfg)
    prompt = body.get("prompt")
    if prompt is None or prompt == "" or prompt == []:
        raise ApiError(400, "Either prompt or prompt_embeds must be provided and non-empty.")
    if isinstance(prompt, str):
        prompts = [count_tokens(prompt) + 1]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompts = [count_tokens(p) + 1 for p in prompt]
    elif isinstance(prompt, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        prompts = [len(prompt)]
    elif isinstance(prompt, list) and all(
        isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt
    ):
        prompts = [len(p) for p in prompt]
    else:
        raise ApiError(400, "prompt: Input should be a valid string or list of tokens")
    max_tokens = _check_int(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = 16
    # The "model" continues its own text: a prompt that ends in what it generates goes on from there.
    offset = continued_from(prompt, chat=False) if isinstance(prompt, str) else 0
    for p in prompts:
        _check_length(p, max_tokens, cfg)
    return {
        "kind": "completion",
        "stream": stream,
        "include_usage": include_usage,
        "n": n,
        "prompts": prompts,
        "max_tokens": max_tokens,
        "offset": offset,
    }


CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def parse_chat(body: dict, cfg: dict) -> dict:
    stream, include_usage, n = _common_checks(body, cfg)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: Field required and must be a non-empty list of messages")
    prompt_tokens = 1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ApiError(400, f"messages.{i}: each message needs a string 'role'")
        if msg["role"] not in CHAT_ROLES:
            raise ApiError(400, f"messages.{i}.role: unknown role {msg['role']!r}")
        content = msg.get("content")
        if content is None:
            if msg["role"] not in ("assistant",):
                raise ApiError(400, f"messages.{i}.content: Field required")
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ApiError(400, f"messages.{i}.content: invalid content part")
                if part["type"] == "text":
                    parts.append(str(part.get("text", "")))
            text = " ".join(parts)
        else:
            raise ApiError(400, f"messages.{i}.content: Input should be a string or a list")
        prompt_tokens += count_tokens(text) + 4
    continue_final = bool(body.get("continue_final_message", False))
    if continue_final and body.get("add_generation_prompt", True):
        raise ApiError(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    offset = 0
    if continue_final:
        last = messages[-1]
        if last["role"] != "assistant":
            raise ApiError(400, "continue_final_message is set but the final message is not from the assistant")
        offset = continued_from(last.get("content") if isinstance(last.get("content"), str) else "", chat=True)
    else:
        prompt_tokens += 2  # assistant generation prompt
    max_tokens = _check_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _check_int(body, "max_tokens", 1)
    max_tokens = _check_length(prompt_tokens, max_tokens, cfg)
    return {
        "kind": "chat",
        "stream": stream,
        "include_usage": include_usage,
        "n": n,
        "prompts": [prompt_tokens],
        "max_tokens": max_tokens,
        "offset": offset,
    }
