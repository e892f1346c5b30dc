"""The vllm-agent command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config.paths import resolve_config_dir
from ..errors import AgentError, ConfigError

if TYPE_CHECKING:  # heavy imports stay inside the commands: `status` must answer fast
    from ..config.directory import Config
    from ..pluginhost.manager import Plugins
    from ..systemd.model import UnitManager

Connect = Callable[[bool], Awaitable["UnitManager"]]

NAME_HELP = "deployment name (models.d/NAME.toml, unit vllm@NAME.service)"
EPILOG = """\
Deployments live in CONFIG_DIR/models.d/NAME.toml (CONFIG_DIR: --config-dir, else
$VLLM_AGENT_CONFIG_DIR, else /etc/vllm-agent, or ~/.config/vllm-agent with --user).
Each runs as the systemd unit vllm@NAME.service: 'systemctl start vllm@NAME' works too.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """``only``: build that command's parser alone, with the same usage, help and errors: a
    quick `status` should not pay 5 ms for the other commands' parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-dir", metavar="DIR", default=argparse.SUPPRESS, help="configuration directory (agent.toml, models.d/)"
    )
    common.add_argument(
        "--user",
        action="store_true",
        default=argparse.SUPPRESS,
        help="manage the user's systemd units instead of the system's",
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    parser = argparse.ArgumentParser(
        prog="vllm-agent",
        description="Run vLLM models as systemd units that are ready only when they truly serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vllm-agent {__version__}")
    parser.add_argument("--config-dir", metavar="DIR", help="configuration directory (agent.toml, models.d/)")
    parser.add_argument("--user", action="store_true", help="manage the user's systemd units instead of the system's")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    elsewhere = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")  # collects the skipped

    def command(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return elsewhere
        return sub.add_parser(name, help=text, description=text, parents=[common], **kwargs)

    p = command("validate", "check agent.toml and every models.d/*.toml; report every problem (exit 2)")
    p.add_argument("--json", action="store_true", help="print {'ok': bool, 'problems': [...]}")

    p = command("plugins", "list loaded plugins, their distributions and the providers they offer")
    p.add_argument("--json", action="store_true")

    command("init", "install vllm@.service, vllm-agent(-gateway).service for this scope and reload systemd")

    p = command(
        "deploy",
        "write models.d/NAME.toml, then start it and wait until it serves",
        usage="vllm-agent deploy NAME --model M [--port P] [--source S] [--no-start] [--timeout S] [-- ENGINE_ARGS...]",
    )
    p.add_argument("name", help="deployment name: 1-64 of [a-z0-9._-]; the unit is vllm@NAME.service")
    p.add_argument("--model", required=True, help="Hugging Face id 'org/name' or an absolute path")
    p.add_argument("--port", type=int, help="port (default: the lowest free one of port_range)")
    p.add_argument("--source", help="model source plugin (default: local for a path, hf otherwise)")
    p.add_argument("--no-start", action="store_true", help="only write the file")
    p.add_argument("--timeout", type=float, help="seconds to wait for ready (default: startup.timeout)")

    for verb, text in (
        ("start", "start a deployment and wait until it serves (resets a failed or crash-loop state)"),
        ("restart", "restart a deployment and wait until it serves again"),
    ):
        p = command(verb, text)
        p.add_argument("name", help=NAME_HELP)
        p.add_argument("--timeout", type=float, help="seconds to wait for ready")
        p.add_argument("--no-wait", action="store_true", help="return once the start is queued")
        p.add_argument("--model", help="serve this model from now on: written to models.d/NAME.toml first")

    p = command("stop", "stop a deployment (graceful, then every process of the unit)")
    p.add_argument("name", help=NAME_HELP)
    p = command("remove", "stop a deployment and remove its unit drop-in, its file and its state")
    p.add_argument("name", help=NAME_HELP)

    p = command("status", "one line per deployment: state, URL and what is wrong")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="print {'deployments': [...]}")

    p = command("doctor", "what is wrong with the host and each deployment, and what to do (exit 0/1/2: ok/warn/fail)")
    p.add_argument("name", nargs="?", help="only this deployment (and the host)")
    p.add_argument("--json", action="store_true", help="print {'ok', 'exit', 'findings': [{scope, check, level, ...}]}")

    p = command("gpus", "each GPU: memory, load, health, and the deployments and other processes on it")
    p.add_argument("--json", action="store_true", help="print {'backends': [...], 'devices': [...], 'error': ...}")
    p.add_argument("--release", metavar="ID", help="lift the quarantine of a device (index or UUID)")

    p = command(
        "pull",
        "download a deployment's model (or ORG/MODEL[@REVISION]) into the cache, with progress; resumable",
    )
    p.add_argument("target", metavar="NAME|ORG/MODEL[@REVISION]", help="a deployment name or a Hugging Face model id")
    p.add_argument("--json", action="store_true", help="print a summary: revision, path, files, bytes, rate")

    p = command("render", "print the unit drop-in a deployment gets, without writing it")
    p.add_argument("name", help=NAME_HELP)

    p = command("logs", "show a deployment's output (journal, or log_dir's file)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.add_argument(
        "--since", metavar="WHEN", help="from WHEN on: journalctl's forms; files: 'YYYY-MM-DD HH:MM' or '10m'"
    )
    p.add_argument("--json", action="store_true", help="the agent's lines as the raw JSON it wrote")

    p = command("verify", "check a deployment's model on this host now: files, headers, checksums (no download)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--force", action="store_true", help="hash every file again, even those unchanged since")
    p.add_argument("--json", action="store_true", help="print {'ok': bool, 'path', 'checksums', 'error', ...}")

    p = command("models", "what each source can serve from this host: id, revision, size, verified, users")
    p.add_argument("--json", action="store_true", help="print {'models': [...]}")

    p = command("test", "run a deployment's post-start tests again against the running engine")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--json", action="store_true", help="print {'ok': bool, 'tests': [...]}")

    command("run", "the agent daemon: reconcile models.d/ with the units, watch them, serve the status API")
    command("reload", "make the running daemon re-read the config directory and reconcile")
    command("gateway", "the host's OpenAI endpoint in the foreground, routing to ready deployments ([gateway])")

    p = command(
        "launch",
        "run a deployment in the foreground (the unit's ExecStart; not for daily use)",
        usage="vllm-agent launch NAME [-- ENGINE_COMMAND...]",
    )
    p.add_argument("name", help=NAME_HELP)
    return parser


def split_engine_args(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Everything after the first ``--`` belongs to the engine, untouched."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, None


def _command_word(argv: Sequence[str]) -> str | None:
    """The command in ``argv``: its first word that is not an option or --config-dir's value."""
    words = iter(argv)
    for word in words:
        if word == "--config-dir":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def entry() -> None:
    """The console script: main(), then out without the interpreter's teardown (10-20 ms of
    module cleanup a person waits for after every command); buffered output is flushed first."""
    import os

    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None, *, connect: Connect | None = None) -> int:
    try:
        return _main(argv, connect)
    except BrokenPipeError:  # `vllm-agent status | head`: the reader left, not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None, connect: Connect | None) -> int:
    own, engine_args = split_engine_args(sys.argv[1:] if argv is None else argv)
    args = build_parser(only="status" if _command_word(own) == "status" else None).parse_args(own)
    if args.command == "status" and connect is None:
        from .status_fast import daemon_status

        user = bool(getattr(args, "user", False))
        config_dir = resolve_config_dir(getattr(args, "config_dir", None), user)
        code = daemon_status(config_dir, user, args.name, as_json=args.json)
        if code is not None:
            return code
    # Services log to stdout (the journal). Commands keep stdout for their results and log to
    # stderr, configured on first use (agent/log.py): most never log, and structlog costs 20 ms.
    service = args.command in ("launch", "run", "gateway")
    if service or getattr(args, "verbose", False):
        from ..log import configure

        configure(verbose=getattr(args, "verbose", False), stream=sys.stdout if service else sys.stderr)
    try:
        return run_command(args, engine_args, connect or _connect_systemd)
    except AgentError as err:
        print(err.one_line(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


async def _connect_systemd(user: bool) -> UnitManager:
    from ..systemd import connect

    return await connect(user)


def run_command(args: argparse.Namespace, engine_args: list[str] | None, connect: Connect) -> int:
    user = bool(getattr(args, "user", False))
    config_dir = resolve_config_dir(getattr(args, "config_dir", None), user)
    if args.command == "pull":  # before the systemd commands' imports: it needs none of them
        from .pull import run_pull

        config = _load(config_dir, user, name=args.target if "/" not in args.target else "")
        return run_pull(config, _plugins(config), args.target, as_json=args.json)
    if args.command == "launch":  # the unit's main process: only what the unit needs
        from ..unit.main import launch

        return launch(config_dir, user, args.name, engine_args)
    if args.command == "status":  # without the other commands' imports: it needs none of them
        import asyncio

        from .status import status

        return asyncio.run(status(config_dir, user, connect, name=args.name, as_json=args.json))
    if args.command == "run":  # the daemon: none of the other commands' imports either
        import asyncio

        return asyncio.run(_run_daemon(config_dir, user, connect))
    from . import commands

    if args.command == "validate":
        return commands.validate(config_dir, user, as_json=args.json)
    if args.command == "gateway":
        from ..gateway.main import main as gateway_main

        return gateway_main(config_dir, user)
    import asyncio

    if engine_args is not None and args.command != "deploy":
        raise AgentError(f"'--' is only for 'deploy' and 'launch', not {args.command!r}")
    if args.command == "plugins":
        config = _load(config_dir, user, name="")
        return commands.plugins(_plugins(config), as_json=args.json)
    if args.command == "gpus":
        from ..gpu.command import gpus, release

        config = _load(config_dir, user, name="")
        plugins = _plugins(config)
        if args.release is not None:
            code = release(plugins.gpu_backends(), config.state_dir, args.release)
            # The daemon restarts what waited for the device now, not on its next tick.
            asyncio.run(commands.tell_daemon(config))
            return code
        return gpus(plugins.gpu_backends(), as_json=args.json, blocked=plugins.blocked(), state_dir=config.state_dir)
    if args.command == "verify":
        from ..progress import ProgressLine
        from .verify import verify

        config = _load(config_dir, user, args.name)
        progress = ProgressLine(sys.stderr)
        try:
            return verify(config, _plugins(config), args.name, progress, as_json=args.json, force=args.force)
        finally:
            progress.clear()
    if args.command == "models":
        from .models import models

        config = _load(config_dir, user, name="")
        return models(config, _plugins(config), as_json=args.json)
    if args.command == "render":
        from ..config.directory import load_one

        config = load_one(config_dir, args.name, user=user)
        return commands.render_cmd(config, _plugins(config), args.name)
    if args.command == "logs":
        from ..config.directory import load_one
        from .logs import show_logs

        config = load_one(config_dir, args.name, user=user)
        return show_logs(config, args.name, follow=args.follow, lines=args.lines, since=args.since, raw=args.json)
    return asyncio.run(_with_units(args, engine_args, config_dir, user, connect))


async def _with_units(
    args: argparse.Namespace, engine_args: list[str] | None, config_dir: Path, user: bool, connect: Connect
) -> int:
    from ..progress import ProgressLine
    from . import commands

    progress = ProgressLine(sys.stderr)
    if args.command == "doctor":
        return await _doctor(config_dir, user, args, connect)
    if args.command == "reload":
        return await commands.reload(_load(config_dir, user, name=""))
    config = _load(config_dir, user, getattr(args, "name", None))
    plugins = _plugins(config)
    if args.command in ("start", "restart") and args.model is not None:  # before systemd: bad input fails alone
        from ..config.deployfile import set_model

        config.deployment(args.name)  # DeploymentNotFound with its hint
        set_model(config, args.name, args.model)
        print(f"wrote {config.deployment_file(args.name)}: model = {args.model!r}")
    units = await connect(user)
    try:
        if args.command == "init":
            return await commands.init(config, units)
        if args.command == "deploy":
            return await commands.deploy(config, units, plugins, args, engine_args or [], progress)
        if args.command in ("start", "restart"):
            return await commands.start(config, units, plugins, args, progress, restart=args.command == "restart")
        if args.command == "stop":
            return await commands.stop(config, units, plugins, args.name)
        if args.command == "test":
            return await commands.test(config, units, plugins, args.name, as_json=args.json)
        if args.command == "remove":
            return await commands.remove(config, units, plugins, args.name)
    finally:
        progress.clear()
        await units.close()
    raise AgentError(f"unknown command {args.command!r}")


async def _run_daemon(config_dir: Path, user: bool, connect: Connect) -> int:
    from ..daemon.main import run_daemon

    units = await connect(user)
    try:
        return await run_daemon(config_dir, user, units)
    finally:
        await units.close()


async def _doctor(config_dir: Path, user: bool, args: argparse.Namespace, connect: Connect) -> int:
    from ..config.directory import load_config
    from ..doctor.report import default_probes, doctor

    problems: list[str] = []
    config = load_config(config_dir, user=user, problems=problems)  # doctor reports, it does not refuse
    probes = default_probes()
    probes.connect = connect
    return await doctor(config, _plugins(config), args.name, as_json=args.json, probes=probes, problems=problems)


def _load(config_dir: Path, user: bool, name: str | None = None) -> Config:
    """The whole directory; a broken file of another deployment is only a warning."""
    from ..config.directory import load_config

    problems: list[str] = []
    config = load_config(config_dir, user=user, problems=problems)
    own = [p for p in problems if name is None or p.startswith(("agent.toml", f"models.d/{name}.toml"))]
    if own:
        raise ConfigError(own, hint=f"fix the files in {config_dir} and run 'vllm-agent validate'")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return config


def _plugins(config: Config) -> Plugins:
    from ..pluginhost.manager import make_plugin_manager

    return make_plugin_manager(config.settings)
