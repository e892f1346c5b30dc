"""The request path: check, route, forward; retry before the first byte.

Only the OpenAI inference paths reach an engine. A request goes to the first candidate of its
plan (routing.py); a connection error or a 5xx before anything reached the client moves it to
the next, at most ``retries`` times. Once a stream has started, relay.py carries it on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from ..config.schema import GatewaySettings
from ..log import get_logger
from .keys import Key, Keys
from .metrics import AccessLog, Metrics
from .relay import relay_stream
from .routing import Member, Plan, Table
from .server import Request, Responder
from .upstream import Pool, UpstreamError, UpstreamResponse

INFERENCE = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}
# vLLM's own paths that change or expose the engine: refused by name (403), never forwarded.
ADMIN = (
    "/reset_prefix_cache",
    "/reset_mm_cache",
    "/sleep",
    "/wake_up",
    "/is_sleeping",
    "/pause",
    "/resume",
    "/collective_rpc",
    "/start_profile",
    "/stop_profile",
    "/scale_elastic_ep",
    "/is_scaling_elastic_ep",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/update_weights",
    "/invocations",
    "/server_info",
)
JSON = b"application/json"
DEPLOYMENT_HEADER = b"x-vllm-agent-deployment"


def error_body(status: int, message: str, kind: str) -> bytes:
    """vLLM's error shape, so OpenAI clients show the message."""
    return json.dumps(
        {"error": {"object": "error", "message": message, "type": kind, "param": None, "code": status}}
    ).encode()


class Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or []


class Gateway:
    def __init__(
        self, settings: GatewaySettings, keys: Keys, *, upstream_key: str | None = None, access: AccessLog | None = None
    ) -> None:
        self.pool = Pool()
        self.outstanding: Counter[str] = Counter()
        self.metrics = Metrics()
        self.access = access or AccessLog()
        self._rows: list[dict[str, Any]] = []
        self._unresolved: list[str] = []
        self.log = get_logger(component="gateway")
        self.configure(settings, keys, upstream_key)

    def configure(self, settings: GatewaySettings, keys: Keys, upstream_key: str | None) -> None:
        """Take new settings (start, SIGHUP): routes, limits and keys apply to the next request."""
        self.settings = settings
        self.keys = keys
        self.access.enabled = settings.access_log
        self._upstream_auth = b"authorization: Bearer %s\r\n" % upstream_key.encode() if upstream_key else b""
        self.update(self._rows)

    def update(self, rows: list[dict[str, Any]]) -> None:
        """The daemon's latest view of the deployments (live.py calls this on every change)."""
        self._rows = rows
        self.table = Table.build(rows, self.settings.routes)
        unresolved = self.table.unresolved()
        if unresolved != self._unresolved:
            for line in unresolved:
                self.log.warning("a gateway name leads nowhere; requests for it get 404 or 503", problem=line)
            self._unresolved = unresolved

    # Entry ---------------------------------------------------------------------------------------

    async def handle(self, request: Request, responder: Responder) -> None:
        started = time.monotonic()
        record: dict[str, Any] = {"method": request.method, "path": request.path}
        try:
            kind = INFERENCE.get(request.path)
            if kind is not None and request.method == "POST":
                await self._inference(kind, request, responder, record, started)
            elif request.path == "/v1/models" and request.method == "GET":
                self._models(responder, self._check_key(request, None))
            elif request.path in ("/health", "/metrics") and request.method == "GET":
                body = b"" if request.path == "/health" else self.metrics.render().encode()
                responder.send(200, [(b"content-type", b"text/plain; version=0.0.4")], body)
            elif kind is not None or request.path == "/v1/models":
                raise Refusal(405, f"{request.method} is not allowed on {request.path}", "MethodNotAllowed")
            elif request.path.rstrip("/") in ADMIN:
                raise Refusal(
                    403, f"{request.path} is an engine admin path; the gateway never forwards it", "Forbidden"
                )
            else:
                raise Refusal(404, f"{request.path} is not served by the gateway", "NotFoundError")
        except Refusal as refusal:
            if not responder.started:
                body = error_body(refusal.status, refusal.message, refusal.kind)
                responder.send(refusal.status, [(b"content-type", JSON), *refusal.headers], body)
            record["error"] = refusal.message
        except (asyncio.CancelledError, ConnectionError):  # the client left: its upstream is aborted
            record["cancelled"] = True
            self.metrics.count("cancellations", record.get("deployment", ""))
            raise
        finally:
            if request.path in INFERENCE:
                status = "499" if record.get("cancelled") else str(responder.status)
                self.metrics.count("requests", record.get("deployment", ""), status)
                record |= {"status": int(status), "seconds": round(time.monotonic() - started, 4)}
                self.access.write(**record)

    def _check_key(self, request: Request, model: str | None) -> Key | None:
        if not self.keys.required:
            return None
        key = self.keys.find(request.headers.get(b"authorization"))
        if key is None:
            raise Refusal(401, "a valid API key is required (Authorization: Bearer KEY)", "AuthenticationError")
        if model is not None and not key.allows(model):
            raise Refusal(403, f"this API key may not use model {model!r}", "PermissionDeniedError")
        return key

    def _models(self, responder: Responder, key: Key | None) -> None:
        """What is routable now, and (with keys) what this key may use."""
        now = int(time.time())
        names = [name for name in self.table.routable() if key is None or key.allows(name)]
        data = [{"id": name, "object": "model", "created": now, "owned_by": "vllm-agent"} for name in names]
        responder.send(200, [(b"content-type", JSON)], json.dumps({"object": "list", "data": data}).encode())

    # Inference -----------------------------------------------------------------------------------

    async def _inference(
        self, kind: str, request: Request, responder: Responder, record: dict[str, Any], started: float
    ) -> None:
        try:
            body = json.loads(request.body)
        except ValueError as err:
            raise Refusal(400, f"the request body is not JSON: {err}", "BadRequestError") from None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise Refusal(400, "the request needs a 'model' string", "BadRequestError")
        record["model"] = model
        key = self._check_key(request, model)
        if key is not None:
            record["key"] = key.name
            if key.max_concurrency and key.in_flight >= key.max_concurrency:
                raise Refusal(429, f"this API key has {key.in_flight} requests in flight, its limit", "RateLimitError")
            key.in_flight += 1
        try:
            plan = self.table.resolve(model)
            if plan is None:
                raise Refusal(404, f"the model {model!r} does not exist", "NotFoundError")
            stream = kind != "embeddings" and body.get("stream") is True
            await self._forward(kind, plan, body, request.body, stream, responder, record, started)
        finally:
            if key is not None:
                key.in_flight -= 1

    def _head(self, path: str) -> bytes:
        return b"POST %s HTTP/1.1\r\ncontent-type: application/json\r\n%s" % (path.encode(), self._upstream_auth)

    def _payload(self, member: Member, plan: Plan, body: dict[str, Any], raw: bytes) -> bytes:
        if member.served == plan.model:
            return raw  # as the client sent it: no re-encoding on the common path
        return json.dumps({**body, "model": member.served}).encode()

    async def send(self, kind_path: str, member: Member, payload: bytes) -> UpstreamResponse:
        self.outstanding[member.name] += 1
        try:
            return await self.pool.request(member.host, member.port, self._head(kind_path), payload)
        except BaseException:
            self.outstanding[member.name] -= 1
            raise

    async def _forward(
        self,
        kind: str,
        plan: Plan,
        body: dict[str, Any],
        raw: bytes,
        stream: bool,
        responder: Responder,
        record: dict[str, Any],
        started: float,
    ) -> None:
        path = next(p for p, k in INFERENCE.items() if k == kind)
        failed: list[str] = []
        last = ""
        while True:
            found = self.table.candidates(plan, self.outstanding, failed)
            if not found or len(failed) > self.settings.retries:
                self._unavailable(plan, last)
            member = found[0]
            record["deployment"] = member.name
            try:
                response = await self.send(path, member, self._payload(member, plan, body, raw))
            except UpstreamError as err:
                failed.append(member.name)
                last = f"{member.name}: {err}"
                self.metrics.count("retries", member.name)
                continue
            hold: list[Any] = [member, response]  # what the finally releases: a migration moves it on
            try:
                retry = response.status >= 500 and len(failed) < self.settings.retries and len(found) > 1
                if retry:
                    failed.append(member.name)
                    last = f"{member.name}: HTTP {response.status}"
                    self.metrics.count("retries", member.name)
                    continue
                if member.name not in plan.pool:
                    self.metrics.count("fallbacks", member.name)
                    record["fallback"] = True
                event_stream = response.headers.get(b"content-type", b"").startswith(b"text/event-stream")
                if not (stream and response.status == 200 and event_stream):
                    try:
                        data = await response.read()
                    except UpstreamError as err:  # nothing reached the client yet: try elsewhere
                        failed.append(member.name)
                        last = f"{member.name}: {err}"
                        self.metrics.count("retries", member.name)
                        continue
                    self.metrics.first_byte(member.name, time.monotonic() - started)
                    headers = [
                        (b"content-type", response.headers.get(b"content-type", JSON)),
                        (DEPLOYMENT_HEADER, member.name.encode()),
                    ]
                    responder.send(response.status, headers, data)
                    return
                try:  # the client gets nothing until the engine sent something: until then, retry
                    first = await response.chunk()
                except UpstreamError as err:
                    failed.append(member.name)
                    last = f"{member.name}: {err}"
                    self.metrics.count("retries", member.name)
                    continue
                self.metrics.first_byte(member.name, time.monotonic() - started)
                await responder.start(
                    200,
                    [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (DEPLOYMENT_HEADER, member.name.encode()),
                    ],
                )
                await relay_stream(self, kind, plan, body, hold, responder, record, first)
                return
            finally:
                hold[1].release()
                self.outstanding[hold[0].name] -= 1

    def _unavailable(self, plan: Plan, last: str) -> None:
        if last:
            raise Refusal(502, f"no engine for {plan.model!r} answered; last: {last}", "BadGatewayError")
        wait = self.table.retry_after(plan, time.time())
        headers = [(b"retry-after", str(wait).encode())] if wait is not None else []
        why = f"starting, ready in about {wait}s" if wait is not None else "none is ready or starting"
        raise Refusal(503, f"no deployment serving {plan.model!r} is ready ({why})", "ServiceUnavailableError", headers)
