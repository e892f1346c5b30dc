"""The unit's main process: resolve the model, check the port, start the engine, wait for
health, run the post-start tests, then report ready and supervise.

systemd sees one Type=notify service: READY=1 is sent only once the engine serves and passed its
tests, so `systemctl start vllm@NAME` returns when the model truly serves, with no daemon.

The phases in the state file: resolving, starting (port check, spawn), loading (spawned, waiting
for /health), testing, serving. A stop (SIGTERM) is honoured in each of them and recorded as
`stopped`; any failure, expected or not, is recorded as the deployment's reason.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence

from ..config.credentials import read_credential
from ..config.desired import RUNNING, DesiredStates
from ..config.directory import Config
from ..config.ports import check_port_free
from ..config.schema import Deployment
from ..deployments.state import StateStore
from ..doctor.diagnose import diagnose
from ..engine_http import HttpError, request
from ..errors import AgentError
from ..gpu.backends import require_backend
from ..gpu.memory import Shortfall, failure_message, pinned_devices, shortfalls, wait_for_memory
from ..gpu.owners import owner_of
from ..gpu.slots import utilisation
from ..log import for_deployment
from ..plugin_api import EngineTarget, ResolvedModel, TestContext
from ..pluginhost.manager import Plugins
from ..progress import engine_phase
from ..render.dropin import EXIT_CONFIG
from ..render.engine_command import drop_revision, with_model
from ..urls import local_url
from .engine_process import EngineProcess
from .notify import Notifier
from .posttests import TestsFailed, run_post_start_tests
from .supervise import Supervisor

EXIT_ENGINE = 1  # the engine failed: systemd may restart it
# Seconds between /health probes while loading: the ready gap stays small (25 ms on average),
# and a refused connect costs about 0.1 ms, so a long load costs well under 1 % of a core.
POLL = 0.05
EXTEND_EVERY = 5.0
HEALTH_TIMEOUT = 2.0  # seconds for one /health probe
EXIT_GRACE = 3.0  # seconds a failing engine gets to exit: vLLM exits soon after its core died


class LaunchFailure(AgentError):
    code = "deployment.start_failed"

    def __init__(self, message: str, *, hint: str | None = None, permanent: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.permanent = permanent


class Launcher:
    def __init__(
        self,
        config: Config,
        deployment: Deployment,
        plugins: Plugins,
        *,
        engine_argv: Sequence[str],
        notifier: Notifier | None = None,
        store: StateStore | None = None,
        rendered_hash: str = "",
    ) -> None:
        self.config = config
        self.deployment = deployment
        self.plugins = plugins
        self.argv = list(engine_argv)
        self.notifier = notifier or Notifier()
        self.store = store or StateStore(config.state_dir)
        self.hash = rendered_hash
        self.log = for_deployment(deployment.name)
        self.url = local_url(deployment.host, deployment.port or 0)
        self.started = time.monotonic()
        # startup.timeout covers loading, health and tests: it starts once the model is
        # resolved, so a download (bounded by its own stall_timeout) may take as long as it takes.
        self.loading_since = self.started
        self.engine: EngineProcess | None = None
        self._progress_at = time.monotonic()
        self._testing = False
        self._became_ready = False
        self._started_wall = time.time()

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        for problem in self.plugins.problems():  # in this deployment's log; the rest still runs
            self.log.warning("plugin skipped", problem=problem)
        try:
            return await self._run(stop)
        except LaunchFailure as failure:
            return await self._fail(failure.message, failure.hint or "", failure.permanent)
        except AgentError as err:  # model source, port, plugin: found before the engine runs
            return await self._fail(err.message, err.hint or "", permanent=not err.transient)
        except Exception as err:  # a bug here or in a plugin: a restart would meet it again
            self.log.exception("unexpected error", error=repr(err))
            return await self._fail(
                f"unexpected error in the launcher: {type(err).__name__}: {err}",
                f"a bug in vllm-agent or a plugin; the traceback is in 'vllm-agent logs {self.deployment.name}'",
                permanent=True,
            )
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.store.flush()  # one last try for what a full disk refused (stopped, failed)

    async def _run(self, stop: asyncio.Event) -> int:
        stopping = asyncio.create_task(stop.wait(), name="stop-signal")
        try:
            return await self._launch(stopping)
        finally:
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)

    async def _launch(self, stopping: asyncio.Task[bool]) -> int:
        name = self.deployment.name
        self._phase(
            "resolving",
            "resolving model",
            started_at=self._started_wall,
            pid=os.getpid(),
            invocation_id=os.environ.get("INVOCATION_ID", ""),
            hash=self.hash,
            url=self.url,
            reason="",
            hint="",
            crash_loop=False,
            visible_devices=pinned_devices(os.environ),
        )
        resolved = await self._resolve(stopping)
        if resolved is None:
            return await self._stop()
        self.loading_since = time.monotonic()
        if resolved.revision:
            self.store.update(name, revision=resolved.revision)
        argv = with_model(self.argv, str(resolved.path))
        if self.deployment.source_name != "local":
            argv = drop_revision(argv)
        assert self.deployment.port is not None
        check_port_free(self.deployment.port, self.deployment.host)
        await self._check_gpu_memory(stopping)

        self._phase("starting", "starting engine")
        if stopping.done():  # asked to stop while resolving ended: never start the engine
            return await self._stop()
        self.engine = await self._spawn(argv)
        self._phase("loading", "engine loading")
        exited = asyncio.create_task(self.engine.wait(), name="engine-exit")
        try:
            if not await self._wait_healthy(exited, stopping):
                return await self._stop()
            target = self._target()
            self._phase("testing", "running post-start tests")
            if not await self._run_tests(target, exited, stopping):
                return await self._stop()
            self._became_ready = True
            ready_in = time.monotonic() - self.started
            self.store.update(
                name, phase="serving", ready_at=time.time(), startup_failures=0, crash_loop=False, reason="", hint=""
            )
            self.notifier.ready(f"serving {self.deployment.served_name} on {self.url}")
            self.log.info("ready", url=self.url, seconds=round(ready_in, 2))
            supervisor = Supervisor(self.deployment, self.plugins, target, self.notifier, self.store, self.log)
            outcome = await supervisor.run(exited, stopping, self.engine)
            if outcome == "stop":
                return await self._stop()
            if outcome == "unhealthy":
                # The watchdog trigger makes systemd stop us (WatchdogSignal=SIGTERM) and
                # restart with Result=watchdog; without a watchdog, exit so Restart= acts.
                await asyncio.wait({stopping}, timeout=5)
                return EXIT_ENGINE
            code = exited.result()
            tail = list(self.engine.tail)
            await self.engine.kill_leftovers()
            found = diagnose(tail, code)
            raise LaunchFailure(f"{found.reason} after it was ready", hint=found.hint)
        finally:
            if not exited.done():
                exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)

    async def _resolve(self, stopping: asyncio.Task[bool]) -> ResolvedModel | None:
        """The model source's answer, or None when asked to stop first (a long download)."""
        source = self.plugins.model_source(self.deployment.source_name)
        resolving = asyncio.create_task(source.resolve(self.deployment, self._resolve_progress), name="resolve")
        await asyncio.wait({resolving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not resolving.done():
            # A download in a worker thread cannot be interrupted: it is abandoned, and the
            # process exits without waiting for it (see unit/main.py).
            resolving.cancel()
            await asyncio.wait({resolving}, timeout=1.0)
            self.log.info("stopped while resolving the model", model=self.deployment.model)
            return None
        resolved = resolving.result()
        self.log.info(
            "model resolved",
            model=self.deployment.model,
            path=str(resolved.path),
            source=source.name,
            description=resolved.description,
        )
        return resolved

    async def _check_gpu_memory(self, stopping: asyncio.Task[bool]) -> None:
        """Before the engine: each pinned device must have what vLLM will claim of it.
        Waits (wait_for_memory) only for memory that may still be released; else exit 78 now."""
        pinned = pinned_devices(os.environ)
        if not pinned:
            return
        backends = require_backend(self.plugins.gpu_backends(), self.plugins.blocked())
        desired = DesiredStates(self.config.state_dir, self.config.unit_dir, user=self.config.user)
        fraction = utilisation(self.deployment.gpu_memory_utilization)

        def read() -> list[Shortfall]:
            snapshots = [snapshot for backend in backends.values() for snapshot in backend.snapshot()]
            return shortfalls(
                snapshots,
                pinned,
                fraction,
                me=self.deployment.name,
                owner=owner_of,
                wanted=lambda name: desired.get(name) == RUNNING,
            )

        def progress(text: str) -> None:
            self._progress_at = time.monotonic()
            self._status(text)

        began = time.monotonic()
        short = await wait_for_memory(read, self.deployment.wait_for_memory, progress, stopped=stopping.done)
        if short:
            raise LaunchFailure(
                failure_message(short, time.monotonic() - began),
                hint=f"free the memory, or lower gpu_memory_utilization in models.d/{self.deployment.name}.toml; "
                "'vllm-agent gpus' shows who holds it",
                permanent=True,
            )

    async def _spawn(self, argv: list[str]) -> EngineProcess:
        """Start the engine; a command that cannot run is a configuration problem (permanent)."""
        env = self._engine_env()
        engine = EngineProcess(argv, env=env)
        hint = "install vLLM for the service, or set [engine] command (agent.toml or models.d/NAME.toml)"
        try:
            await engine.start()
        except FileNotFoundError:
            raise LaunchFailure(
                f"engine command not found: {argv[0]} (PATH={env.get('PATH', '')})", hint=hint, permanent=True
            ) from None
        except OSError as err:
            raise LaunchFailure(
                f"engine command {argv[0]} cannot be run: {err.strerror or err}", hint=hint, permanent=True
            ) from None
        self.log.info("engine started", pid=engine.pid, argv=argv)
        return engine

    async def _wait_healthy(self, exited: asyncio.Task[int], stopping: asyncio.Task[bool]) -> bool:
        """Poll /health until 200. False when asked to stop; LaunchFailure when it cannot be."""
        assert self.engine is not None
        startup = self.deployment.startup
        deadline = self.loading_since + startup.timeout
        last_status = 0.0
        while True:
            if stopping.done():
                return False
            if exited.done():
                await self._engine_died_during_start(exited.result())
            now = time.monotonic()
            if now > deadline:
                raise LaunchFailure(
                    f"not ready after startup.timeout = {startup.timeout:g}s",
                    hint="raise [startup] timeout in the deployment file if the model needs longer",
                )
            silent = now - self.engine.last_output
            if silent > startup.stall_timeout:
                raise LaunchFailure(
                    f"the engine stalled: no output and no health for {silent:.0f}s while loading",
                    hint="see 'vllm-agent logs NAME'; raise [startup] stall_timeout if loading is this quiet",
                )
            if await self._health_is_200():
                return True
            if now - last_status >= 1.0:
                last_status = now
                # The phase parsed from vLLM's lines (agent/progress.py), not its last raw line.
                phase = engine_phase(self.engine.tail) or "starting the engine"
                self._status(f"waiting for health: engine loading ({now - self.started:.0f}s): {phase}")
            await asyncio.wait({exited, stopping}, timeout=POLL)

    async def _run_tests(self, target: EngineTarget, exited: asyncio.Task[int], stopping: asyncio.Task[bool]) -> bool:
        remaining = self.loading_since + self.deployment.startup.timeout - time.monotonic()
        context = TestContext(config_dir=self.config.path, deployment=self.deployment)
        tests = asyncio.create_task(
            run_post_start_tests(self.plugins, target, self.deployment, context, log=self.log, progress=self._status)
        )
        self._testing = True
        try:
            done, _ = await asyncio.wait(
                {tests, exited, stopping}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._testing = False
        if tests not in done:
            tests.cancel()
            await asyncio.gather(tests, return_exceptions=True)
            if stopping in done:
                return False
            if exited in done:
                await self._engine_died_during_start(exited.result(), during="the post-start tests")
            raise LaunchFailure(
                f"the post-start tests did not finish within startup.timeout = {self.deployment.startup.timeout:g}s",
                hint="lower the tests' timeouts or raise [startup] timeout",
            )
        try:
            outcomes = tests.result()
        except TestsFailed as failed:
            self.store.update(self.deployment.name, tests=failed.as_records())
            if not await self._engine_healthy(exited):
                # vLLM exits soon after its engine core died: then the engine, not the model's
                # answers, failed the test, and a restart may help.
                await asyncio.wait({exited}, timeout=EXIT_GRACE)
                if exited.done():
                    await self._engine_died_during_start(exited.result(), during="the post-start tests")
            raise LaunchFailure(failed.message, hint=failed.hint, permanent=True) from None
        self.store.update(self.deployment.name, tests=[o.__dict__ for o in outcomes])
        return True

    async def _engine_healthy(self, exited: asyncio.Task[int]) -> bool:
        return not exited.done() and await self._health_is_200()

    async def _health_is_200(self) -> bool:
        try:
            return (await request("GET", f"{self.url}/health", timeout=HEALTH_TIMEOUT)).status == 200
        except HttpError:
            return False  # refused while loading: vLLM listens only once the model is loaded

    async def _heartbeat(self) -> None:
        """Feed systemd's watchdog while this process runs (health problems trigger it
        explicitly), and push the start timeout ahead while loading shows progress."""
        stall = self.deployment.startup.stall_timeout
        while True:
            if self.notifier.watchdog_usec:
                self.notifier.watchdog()
            if not self._became_ready:
                last = max(self._progress_at, self.engine.last_output if self.engine else 0.0)
                if self._testing or time.monotonic() - last < stall:
                    self.notifier.extend_timeout(stall + 30)
            if self.store.pending():  # a full or read-only state disk refused a write: retry it
                await asyncio.to_thread(self.store.flush)
            await asyncio.sleep(min(EXTEND_EVERY, self.notifier.watchdog_usec / 4e6 or EXTEND_EVERY))

    def _resolve_progress(self, text: str) -> None:
        self._progress_at = time.monotonic()
        self._status(f"resolving model: {text}")

    async def _engine_died_during_start(self, code: int, during: str = "startup") -> None:
        assert self.engine is not None
        tail = list(self.engine.tail)
        await self.engine.kill_leftovers()
        found = diagnose(tail, code)
        raise LaunchFailure(f"{found.reason} during {during}", hint=found.hint, permanent=found.permanent)

    async def _stop(self) -> int:
        self.notifier.stopping("stopping engine")
        if self.engine is not None:
            # Bounded (SIGKILL after stop_timeout): TimeoutStopSec is 5 s longer, so this
            # process still records the stop, instead of systemd killing it with Result=timeout.
            code = await self.engine.stop(self.deployment.startup.stop_timeout)
            self.log.info("engine stopped", status=code)
        self._phase("stopped", "stopped")
        return 0

    async def _fail(self, reason: str, hint: str, permanent: bool) -> int:
        if self.engine is not None and self.engine.returncode is None:
            await self.engine.stop(10)
        saved = self.store.load(self.deployment.name)
        changes: dict[str, object] = {}
        if not self._became_ready:
            failures = saved.startup_failures + 1
            since = saved.failing_since if saved.startup_failures else self._started_wall
            changes = {"startup_failures": failures, "failing_since": since}
            restart = self.deployment.restart
            # systemd's start limit catches quick failures within its window; starts that each
            # take longer (a ten-minute load, then a crash) only this count can stop.
            if not permanent and failures >= restart.max_startup_failures and time.time() - since > restart.window:
                reason = (
                    f"crash-loop: {failures} starts in a row never became ready "
                    f"(over {time.time() - since:.0f}s); last: {reason}"
                )
                hint = f"fix the cause, then 'vllm-agent start {self.deployment.name}' resets it"
                permanent = True
                changes["crash_loop"] = True
        self.store.update(self.deployment.name, phase="failed", reason=reason, hint=hint, **changes)
        self.notifier.status(f"failed: {reason}" + (f" (hint: {hint})" if hint else ""))
        self.log.error("failed", reason=reason, hint=hint, permanent=permanent)
        return EXIT_CONFIG if permanent else EXIT_ENGINE

    def _phase(self, phase: str, text: str, **changes: object) -> None:
        self.store.update(self.deployment.name, phase=phase, **changes)
        self._status(text)

    def _status(self, text: str) -> None:
        self.notifier.status(text)

    def _target(self) -> EngineTarget:
        return EngineTarget(
            deployment=self.deployment.name,
            url=self.url,
            served_model_name=self.deployment.served_name,
            api_key=_credential("api_key"),
        )

    def _engine_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if "HF_HUB_OFFLINE" not in self.deployment.env:
            # The model is resolved and local: the engine must not reach for the Hub itself
            # (a second download, or a start that hangs on an unreachable Hub).
            env["HF_HUB_OFFLINE"] = "1"
        api_key = _credential("api_key")
        if api_key:
            env["VLLM_API_KEY"] = api_key  # vLLM reads it; never on the command line
        return env


def _credential(name: str) -> str | None:
    """Inside the unit, systemd put the credentials in $CREDENTIALS_DIRECTORY."""
    return read_credential(os.environ.get("CREDENTIALS_DIRECTORY"), name)
