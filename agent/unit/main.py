"""`vllm-agent launch NAME`: the main process of vllm@NAME, as systemd starts it.

Its imports are the unit's own: no D-Bus, no pydantic for an unchanged deployment file
(config/validated.py), no lifecycle or placement code. Every unit pays for each module here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from pathlib import Path

from ..config.directory import Config, load_one
from ..config.names import check_name
from ..config.schema import MODELS_DIR
from ..deployments.state import StateStore
from ..errors import AgentError, PortUnavailable
from ..pluginhost.manager import make_plugin_manager
from ..render.dropin import EXIT_CONFIG, HASH_ENV
from .notify import Notifier


def launch(config_dir: Path, user: bool, name: str, engine_argv: list[str] | None) -> int:
    """The unit's main process. Problems found here are permanent (exit 78): no restart loop."""
    from .launcher import Launcher

    notifier = Notifier()
    config: Config | None = None
    try:
        check_name(name)
        config = load_one(config_dir, name, user=user)
        deployment = config.deployment(name)
        plugins = make_plugin_manager(config.settings, providers_now=False)
        if deployment.port is None:
            raise PortUnavailable(
                f"{MODELS_DIR}/{name}.toml has no port", hint=f"run 'vllm-agent start {name}' once to assign one"
            )
        if engine_argv is None:  # started without a drop-in: render ourselves
            from ..render.dropin import render

            rendered = render(config, deployment)
            engine_argv = list(rendered.argv[rendered.argv.index("--") + 1 :])
        launcher = Launcher(
            config,
            deployment,
            plugins,
            engine_argv=engine_argv,
            notifier=notifier,
            rendered_hash=os.environ.get(HASH_ENV, ""),
        )
    except AgentError as err:
        print(err.one_line(), file=sys.stderr, flush=True)
        return _launch_failed(notifier, config, name, err.message, err.hint or "")
    except Exception as err:  # a broken plugin, a bug: a restart would meet it again
        traceback.print_exc()
        return _launch_failed(
            notifier,
            config,
            name,
            f"unexpected error while setting up the launcher: {type(err).__name__}: {err}",
            f"a bug in vllm-agent or a plugin; the traceback is in 'vllm-agent logs {name}'",
        )
    try:
        # Not asyncio.run(): it joins the worker threads, and a download abandoned on a stop
        # (the model source's thread) must not hold the stop up until systemd kills us.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        code = loop.run_until_complete(launcher.run())
    except Exception:  # the launcher could not even record its failure
        traceback.print_exc()
        notifier.status("failed: unexpected error in the launcher (see its log)")
        code = EXIT_CONFIG
    # Skip the interpreter's teardown (~0.2 s of module GC): every engine death, watchdog
    # restart and stop waits for this process to exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _launch_failed(notifier: Notifier, config: Config | None, name: str, reason: str, hint: str) -> int:
    """Record why the launcher could not even start, where status and the daemon look."""
    notifier.status(f"failed: {reason}" + (f" (hint: {hint})" if hint else ""))
    if config is not None:  # its name was checked: the state file's path is safe
        try:
            StateStore(config.state_dir).update(name, phase="failed", reason=reason, hint=hint)
        except OSError as err:
            print(f"error: cannot record the failure in {config.state_dir}: {err}", file=sys.stderr, flush=True)
    return EXIT_CONFIG
