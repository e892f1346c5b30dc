"""`vllm-agent gateway`: the service (vllm-agent-gateway.service, Type=notify with a watchdog).

Ready once it listens; routes follow the daemon's pushed view. SIGHUP re-reads agent.toml's
``[gateway]`` routes and the API keys (the listen address needs a restart); SIGTERM stops.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from ..config.credentials import read_credential
from ..config.directory import load_settings
from ..config.paths import default_socket
from ..config.schema import parse_listen
from ..errors import AgentError, ConfigError
from ..log import get_logger
from ..unit.notify import Notifier
from .keys import Keys, load_keys
from .live import follow
from .proxy import Gateway
from .server import serve


def _settings(config_dir: Path):  # noqa: ANN202 - AgentSettings
    problems: list[str] = []
    settings = load_settings(config_dir, problems)
    if problems:
        raise ConfigError(problems, hint=f"fix the files in {config_dir} and run 'vllm-agent validate'")
    return settings


def configure(gateway: Gateway, config_dir: Path) -> None:
    """Read agent.toml's [gateway], the key files and the engines' api_key into ``gateway``;
    a ConfigError changes nothing."""
    settings = _settings(config_dir)
    keys = load_keys(settings.credentials_dir)
    gateway.configure(settings.gateway, keys, read_credential(settings.credentials_dir, "api_key"))


async def run_gateway(
    config_dir: Path, user: bool, notifier: Notifier | None = None, stop: asyncio.Event | None = None
) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); ready for systemd once listening."""
    notifier = notifier or Notifier()
    log = get_logger(component="gateway")
    settings = _settings(config_dir)
    gateway = Gateway(settings.gateway, Keys())
    configure(gateway, config_dir)
    host, port = parse_listen(settings.gateway.listen)
    try:
        server = await serve(gateway.handle, host, port)
    except OSError as err:
        raise AgentError(
            f"the gateway cannot listen on {settings.gateway.listen}: {err.strerror or err}",
            hint="set [gateway] listen in agent.toml to a free address, or stop what holds it",
        ) from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    connected = asyncio.Event()
    socket = settings.socket or default_socket(user)

    def reload() -> None:
        try:
            configure(gateway, config_dir)
        except AgentError as err:
            log.error("gateway reload refused; keeping the running settings", error=err.message)
            return
        log.info("gateway settings reloaded", routes=len(gateway.settings.routes), keys=len(gateway.keys.by_digest))

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    tasks = [
        asyncio.create_task(follow(socket, gateway.update, connected), name="daemon-events"),
        asyncio.create_task(_watchdog(notifier, lambda: _status(gateway, connected)), name="watchdog"),
    ]
    log.info("gateway listening", listen=settings.gateway.listen, daemon=str(socket))
    notifier.ready(f"listening on {settings.gateway.listen}")
    try:
        await stop.wait()
    finally:
        notifier.stopping("stopping")
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gateway.pool.close()
        gateway.access.flush()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


def _status(gateway: Gateway, connected: asyncio.Event) -> str:
    names = gateway.table.routable()
    daemon = "following the daemon" if connected.is_set() else "daemon not reachable, last view kept"
    return f"{len(names)} model name(s) routable; {daemon}"


async def _watchdog(notifier: Notifier, status: Callable[[], str]) -> None:
    """WATCHDOG=1 at a quarter of WatchdogSec (only a stalled event loop misses it), with the
    STATUS= line `systemctl status` shows when it changed."""
    usec = notifier.watchdog_usec
    while usec:
        text = status()
        if text != notifier.last_status:
            notifier.status(text)
        notifier.watchdog()
        await asyncio.sleep(usec / 4e6)


def main(config_dir: Path, user: bool) -> int:
    try:
        import uvloop
    except ImportError:  # the standard loop works, at a lower request rate
        return asyncio.run(run_gateway(config_dir, user))
    return uvloop.run(run_gateway(config_dir, user))
