"""Post-start test runner ``example-answers``: each prompt gets a non-empty completion.

Options in the ``[[tests]]`` entry: ``prompts``, a list of ``{prompt = "...", expect = "..."}``
(``expect``, optional: text the answer must contain); default: one prompt, "Hello".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
from vllm_agent.plugin_api import EngineTarget, TestContext, TestOutcome, TestSpec

DEFAULT = [{"prompt": "Hello"}]


class AnswersRunner:
    name = "example-answers"

    def problems(self, spec: TestSpec, context: TestContext) -> Sequence[str]:
        unknown = sorted(set(spec.options) - {"prompts"})
        if unknown:
            return [f"{key}: unknown option for runner {self.name!r} (known: prompts)" for key in unknown]
        prompts = spec.options.get("prompts", DEFAULT)
        if not isinstance(prompts, list) or not prompts:
            return ["prompts: must be a non-empty list of {prompt = ..., expect = ...}"]
        return [
            f"prompts[{i}]: needs a string 'prompt' (and optionally a string 'expect')"
            for i, item in enumerate(prompts)
            if not isinstance(item, dict)
            or not isinstance(item.get("prompt"), str)
            or not isinstance(item.get("expect", ""), str)
            or set(item) - {"prompt", "expect"}
        ]

    async def run(self, target: EngineTarget, spec: TestSpec, context: TestContext) -> Sequence[TestOutcome]:
        outcomes = []
        async with httpx.AsyncClient(timeout=spec.timeout) as client:
            for i, item in enumerate(spec.options.get("prompts", DEFAULT)):
                outcomes.append(await self._one(client, target, f"{spec.name or self.name}[{i}]", item))
        return outcomes

    async def _one(
        self, client: httpx.AsyncClient, target: EngineTarget, label: str, item: dict[str, Any]
    ) -> TestOutcome:
        started = time.monotonic()
        body = {"model": target.served_model_name, "prompt": item["prompt"], "max_tokens": 8}
        try:
            response = await client.post(f"{target.url}/v1/completions", json=body, headers=target.headers)
            response.raise_for_status()
            text = response.json()["choices"][0]["text"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as err:
            return TestOutcome(
                name=label, ok=False, detail=f"completion failed: {err!r}", duration=time.monotonic() - started
            )
        expect = item.get("expect", "")
        if not text or expect not in text:
            detail = f"answer {text!r} " + (f"lacks {expect!r}" if text else "is empty")
            return TestOutcome(name=label, ok=False, detail=detail, duration=time.monotonic() - started)
        return TestOutcome(name=label, ok=True, detail=f"{len(text)} characters", duration=time.monotonic() - started)
