"""Health strategy ``example-served-model``: /v1/models lists the deployment's served name."""

from __future__ import annotations

import time

import httpx
from vllm_agent.plugin_api import CheckResult, EngineTarget


class ServedModelCheck:
    name = "example-served-model"
    deep = False  # one cheap GET: runs every round

    async def check(self, target: EngineTarget, timeout: float) -> CheckResult:
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(f"{target.url}/v1/models", headers=target.headers)
            response.raise_for_status()
            served = [item.get("id") for item in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError) as err:  # an unhealthy engine is a result, not an error
            return CheckResult(ok=False, detail=f"/v1/models: {err!r}", latency=time.monotonic() - started)
        ok = target.served_model_name in served
        detail = "" if ok else f"/v1/models lists {served}, not {target.served_model_name!r}"
        return CheckResult(ok=ok, detail=detail, latency=time.monotonic() - started)
