"""The fake's "model": a deterministic answer and a tokenizer to count prompts with.

It answers the same words every time (greedy decoding of a tiny model looks like this too), and a
prompt that ends in its own answer is continued from there, as a model continues its text; tests
rely on both. Tokens are counted like a word-piece tokenizer roughly would: words and punctuation.
"""

from __future__ import annotations

import re

WORDS = [
    "hello",
    "world",
    "this",
    "is",
    "a",
    "fake",
    "vllm",
    "engine",
    "answer",
    "with",
    "deterministic",
    "tokens",
    "for",
    "tests",
    "only",
    "ok",
]


def count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def token_text(i: int, chat: bool) -> str:
    word = WORDS[i % len(WORDS)]
    return word if (chat and i == 0) else " " + word


def continued_from(text: str, chat: bool) -> int:
    """How many tokens of the fake's own answer ``text`` ends with (so generation goes on after
    them, as a model continues its text); 0 when it ends with fewer than two. A chat answer being
    continued (``continue_final_message``) is the whole final message, so it must be exactly that text."""
    generated = ""
    found = 0
    for k in range(1, count_tokens(text) + 1):
        generated += token_text(k - 1, chat)
        if (text == generated) if chat else text.endswith(generated):
            found = k
    # A prompt that merely ends in its first word ("Say hello") is not a continuation.
    return found if chat or found >= 2 else 0
