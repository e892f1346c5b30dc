"""The subcommands' bodies: parse nothing, print results, return the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.credentials import read_credential
from ..config.deployfile import create
from ..config.desired import STOPPED, boot_target
from ..config.directory import Config, load_config, load_one
from ..config.names import check_name
from ..config.schema import MODELS_DIR
from ..daemon.api import ask as ask_daemon
from ..deployments.lifecycle import Deployments
from ..deployments.state import StateStore
from ..deployments.status import one_line
from ..errors import AgentError, DaemonUnavailable
from ..pluginhost.manager import Plugins
from ..progress import ProgressLine
from ..systemd.model import UnitManager
from ..urls import local_url
from .install import SERVICE_USER, enable_agent, install_units, system_dropins
from .status import warn_silent as _warn_silent
from .validate import problems_in

if TYPE_CHECKING:
    pass

Connect = Callable[[bool], Awaitable[UnitManager]]


def _json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def validate(config_dir: Path, user: bool, *, as_json: bool) -> int:
    problems = problems_in(config_dir, user=user)
    if as_json:
        _json({"ok": not problems, "config_dir": str(config_dir), "problems": problems})
    elif problems:
        for problem in problems:
            print(f"{config_dir}/{problem}" if not problem.startswith("/") else problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {config_dir}", file=sys.stderr)
    else:
        count = len(load_config(config_dir, user=user).deployments)
        print(f"ok: {config_dir} ({count} deployment(s))")
    return 2 if problems else 0


def plugins(plugins: Plugins, *, as_json: bool) -> int:
    from .. import HOOK_API_VERSION

    rows = plugins.info()
    if as_json:
        _json(
            {
                "hook_api": HOOK_API_VERSION,
                "plugins": [row.__dict__ | {"providers": list(row.providers)} for row in rows],
                "blocked": plugins.blocked(),
            }
        )
        return 0
    width = max((len(row.name) for row in rows), default=4)
    print(f"hook API {HOOK_API_VERSION}")
    for row in rows:
        api = f"hook API {row.hook_api}" if row.hook_api else "-"
        detail = ", ".join(row.providers) or "-" if row.status == "loaded" else row.reason
        print(f"{row.name:<{width}}  {row.distribution:<24}  {row.status:<7}  {api:<20}  {detail}")
    for name in plugins.blocked():
        print(f"{name:<{width}}  (blocked in agent.toml)")
    return 0


def render_cmd(config: Config, plugins: Plugins, name: str) -> int:
    deployments = Deployments(config, units=None, plugins=plugins)  # type: ignore[arg-type]
    sys.stdout.write(deployments.render(name, write_port=False).text)
    return 0


async def init(config: Config, units: UnitManager) -> int:
    written = install_units(config)
    await units.reload()
    for path in written:
        print(f"installed {path}")
    if enable_agent(config):
        print(f"enabled vllm-agent.service ({boot_target(config.user)})")
    if not config.user and not system_dropins(config):
        print(
            f"warning: no '{SERVICE_USER}' user: engines run as root, without the sandbox; install the "
            "package (packaging/README.md) or create the user, then run init again"
        )
    scope = "--user " if config.user else ""
    print(f"ready: units in {config.unit_dir}, deployments in {config.path / MODELS_DIR}")
    print(f"next: vllm-agent {scope}deploy NAME --model ORG/MODEL")
    return 0


async def deploy(
    config: Config,
    units: UnitManager,
    plugins: Plugins,
    args: argparse.Namespace,
    engine_args: list[str],
    progress: ProgressLine,
) -> int:
    data: dict[str, Any] = {"model": args.model}
    if args.source:
        data["source"] = args.source
    if args.port is not None:
        data["port"] = args.port
    if engine_args:
        data["args"] = engine_args
    create(config, args.name, data)
    config.deployments[args.name] = load_one(config.path, args.name, user=config.user).deployment(args.name)
    print(f"wrote {config.deployment_file(args.name)}")
    deployments = Deployments(config, units, plugins)
    if args.no_start:
        prepared = deployments.prepare(args.name)
        deployments.desired.set(args.name, STOPPED)  # the daemon must not start it either
        if prepared.changed:
            await units.reload()
        print(f"not started; start it with: vllm-agent start {args.name}")
        return 0
    try:
        status = await deployments.start(args.name, timeout=args.timeout, progress=progress)
    finally:
        await tell_daemon(config)
    progress.clear()
    print(one_line(status))
    return 0


async def start(
    config: Config,
    units: UnitManager,
    plugins: Plugins,
    args: argparse.Namespace,
    progress: ProgressLine,
    *,
    restart: bool,
) -> int:
    deployments = Deployments(config, units, plugins)
    verb = deployments.restart if restart else deployments.start
    try:
        status = await verb(args.name, wait=not args.no_wait, timeout=args.timeout, progress=progress)
    finally:
        await tell_daemon(config)
    progress.clear()
    print(one_line(status))
    return 0


async def stop(config: Config, units: UnitManager, plugins: Plugins, name: str) -> int:
    config.deployment(name)
    status = await Deployments(config, units, plugins).stop(name)
    await tell_daemon(config)
    print(one_line(status))
    return 0


async def remove(config: Config, units: UnitManager, plugins: Plugins, name: str) -> int:
    check_name(name)
    if name not in config.deployments and not config.deployment_file(name).exists():
        config.deployment(name)  # raises DeploymentNotFound with a hint
    for path in await Deployments(config, units, plugins).remove(name):
        print(f"removed {path}")
    await tell_daemon(config)
    return 0


async def test(config: Config, units: UnitManager, plugins: Plugins, name: str, *, as_json: bool) -> int:
    """Run a deployment's tests again against the running engine; record them for the daemon."""
    from dataclasses import asdict

    from ..plugin_api import EngineTarget, TestContext
    from ..unit.posttests import run_spec, test_specs

    deployment = config.deployment(name)
    if deployment.mode == "external":
        url = (deployment.url or "").rstrip("/")
    else:
        status = await Deployments(config, units, plugins).status(name)
        if status.state not in ("ready", "unhealthy"):
            raise AgentError(f"{name} is {status.state}, not serving", hint=f"start it with 'vllm-agent start {name}'")
        url = local_url(deployment.host, deployment.port or 0)
    api_key = read_credential(config.settings.credentials_dir, "api_key")
    target = EngineTarget(deployment=name, url=url, served_model_name=deployment.served_name, api_key=api_key)
    context = TestContext(config_dir=config.path, deployment=deployment)
    outcomes = []
    for spec in test_specs(deployment, plugins):
        outcomes += await run_spec(plugins, target, spec, context)
    StateStore(config.state_dir).update(name, tests=[asdict(outcome) for outcome in outcomes])
    ok = all(outcome.ok for outcome in outcomes)
    if as_json:
        _json({"deployment": name, "ok": ok, "tests": [asdict(o) | {"output": o.output[-4000:]} for o in outcomes]})
    else:
        for outcome in outcomes:
            mark = "PASS" if outcome.ok else "FAIL"
            print(f"{mark}  {outcome.name:<40} {outcome.duration:6.2f}s  {outcome.detail}".rstrip())
        if not outcomes:
            print(f"{name} has no tests (no [[tests]] and no openai-smoke runner)")
        print(f"{sum(o.ok for o in outcomes)} passed, {sum(not o.ok for o in outcomes)} failed")
    return 0 if ok else 1


async def tell_daemon(config: Config) -> None:
    """Best effort: a running daemon re-reads the config so its view follows the CLI's. One that
    does not answer costs a second and a warning, never the command's own outcome."""
    reply = await ask_daemon(config.socket, "POST", "/v1/reload")
    if reply.silent:
        _warn_silent(config, reply.silent, "it was not told; 'vllm-agent reload' once it answers")


async def reload(config: Config) -> int:
    reply = await ask_daemon(config.socket, "POST", "/v1/reload")
    if reply.silent:
        raise DaemonUnavailable(
            f"the agent daemon on {config.socket} {reply.silent}",
            hint="see 'systemctl status vllm-agent'; restart it if it stays silent",
        )
    if reply.body is None:
        raise DaemonUnavailable(
            f"no agent daemon answers on {config.socket}",
            hint="start it with 'systemctl start vllm-agent' (or 'vllm-agent run')",
        )
    print("reload queued: the daemon re-reads the config directory and reconciles")
    return 0
