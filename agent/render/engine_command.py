"""The engine's command line: what vLLM is asked to do for one deployment."""

from __future__ import annotations

from collections.abc import Sequence

from ..config.schema import AgentSettings, Deployment
from ..errors import AgentError


def engine_argv(deployment: Deployment, settings: AgentSettings, *, model: str | None = None) -> list[str]:
    """``<engine.command> --model M --served-model-name N --host H --port P [flags] [args]``."""
    if deployment.port is None:
        raise AgentError(f"deployment {deployment.name!r} has no port yet", hint="run 'vllm-agent start' to assign one")
    argv = [
        *deployment.engine_command(settings),
        "--model",
        model or deployment.model,
        "--served-model-name",
        deployment.served_name,
        "--host",
        deployment.host,
        "--port",
        str(deployment.port),
    ]
    if deployment.revision and not deployment.model.startswith("/"):
        argv += ["--revision", deployment.revision]
    if deployment.tensor_parallel_size is not None:
        argv += ["--tensor-parallel-size", str(deployment.tensor_parallel_size)]
    if deployment.pipeline_parallel_size is not None:
        argv += ["--pipeline-parallel-size", str(deployment.pipeline_parallel_size)]
    if deployment.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(deployment.gpu_memory_utilization)]
    if deployment.max_model_len is not None:
        argv += ["--max-model-len", str(deployment.max_model_len)]
    return argv + list(deployment.args)


def with_model(argv: Sequence[str], model: str) -> list[str]:
    """Replace the value of the first ``--model`` (the id becomes the resolved local path)."""
    out = list(argv)
    for index, item in enumerate(out):
        if item == "--model" and index + 1 < len(out):
            out[index + 1] = model
            return out
        if item.startswith("--model="):
            out[index] = f"--model={model}"
            return out
    raise AgentError("the engine command line has no --model", hint="check ExecStart in 'systemctl cat'")


def drop_revision(argv: Sequence[str]) -> list[str]:
    """A resolved snapshot is already at its revision; vLLM must not look it up again."""
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--revision":
            skip = True
            continue
        if item.startswith("--revision="):
            continue
        out.append(item)
    return out
