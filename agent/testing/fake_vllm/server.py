"""The HTTP side of vLLM's OpenAI server, as uvicorn serves it: the routes (``/health``, ``/ping``,
``/version``, ``/metrics``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``), 404 and
405 with FastAPI's ``{"detail": ...}``, ``--api-key`` on ``/v1``, one uvicorn access line a request.

``/health`` is 200 while the engine lives, also when it is wedged (as vLLM's is), and 503 once it
died; ``slow-health:S`` delays it and ``crash-after-requests:N`` kills the server after N answers.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import completions
from .completions import Generation
from .core_client import Engine
from .logs import ulog
from .protocol import ApiError, parse_chat, parse_completion

VERSION = "0.0.0-fake"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    server: FakeServer

    # -- plumbing -------------------------------------------------------------------------------

    def version_string(self):
        return self.server_version

    def log_request(self, code="-", size="-"):
        code = int(code) if str(code).isdigit() else code
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        host, port = self.client_address[:2]
        ulog(f'{host}:{port} - "{self.requestline}" {code} {phrase}')

    def log_message(self, format, *args):  # noqa: A002 - errors from http.server itself
        ulog(format % args, level="WARNING")

    def send_json(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int, content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("content-type", content_type)
        self.send_header("content-length", "0")
        self.end_headers()

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.write_chunk(f"data: {text}\n\n".encode())

    # -- routing --------------------------------------------------------------------------------

    ROUTES = {
        "/health": {"GET": "health"},
        "/ping": {"GET": "health", "POST": "health"},
        "/version": {"GET": "version"},
        "/metrics": {"GET": "metrics"},
        "/v1/models": {"GET": "models"},
        "/v1/completions": {"POST": "completions"},
        "/v1/chat/completions": {"POST": "chat"},
    }

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def do_HEAD(self):
        self.send_response(405)
        self.send_header("content-length", "0")
        self.end_headers()

    def route(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics" and path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        if method == "POST" or self.headers.get("content-length"):
            body = self.read_body()
        else:
            body = b""
        methods = self.ROUTES.get(path)
        if methods is None:
            self.send_json(404, {"detail": "Not Found"})
            return
        if method not in methods:
            self.send_json(405, {"detail": "Method Not Allowed"}, {"allow": ", ".join(methods)})
            return
        api_key = self.server.cfg["api_key"]
        if api_key and path.startswith("/v1"):
            if self.headers.get("authorization") != f"Bearer {api_key}":
                self.send_json(401, {"error": "Unauthorized"})
                return
        try:
            getattr(self, "h_" + methods[method])(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- endpoints ------------------------------------------------------------------------------

    def h_health(self, _body: bytes) -> None:
        slow = self.server.cfg["modes"].get("slow-health")
        if slow:
            time.sleep(slow)
        self.send_empty(503 if self.server.engine.get_state() == "dead" else 200)

    def h_version(self, _body: bytes) -> None:
        self.send_json(200, {"version": VERSION})

    def h_metrics(self, _body: bytes) -> None:
        data = self.server.engine.metrics().encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=1.0.0; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def h_models(self, _body: bytes) -> None:
        cfg = self.server.cfg
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.server.started,
                "owned_by": "vllm",
                "root": cfg["model"],
                "parent": None,
                "max_model_len": cfg["max_model_len"],
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": self.server.started,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in cfg["served_model_names"]
        ]
        self.send_json(200, {"object": "list", "data": data})

    def h_completions(self, body: bytes) -> None:
        self.generate(body, parse_completion)

    def h_chat(self, body: bytes) -> None:
        self.generate(body, parse_chat)

    def generate(self, raw: bytes, parse) -> None:
        cfg = self.server.cfg
        engine = self.server.engine
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise ApiError(400, f"JSON decode error: {exc}") from None
            if not isinstance(body, dict):
                raise ApiError(400, "Request body must be a JSON object.")
            req = parse(body, cfg)
        except ApiError as err:
            self.send_json(err.status, err.body())
            return

        limit = cfg["modes"].get("crash-after-requests")
        if limit == 0:
            self.server.crash("crash-after-requests:0")
        start = time.monotonic()
        if engine.get_state() == "dead":
            self.send_empty(500)
            return
        gen = Generation(req, cfg, engine, start)
        reason = None
        try:
            if req["stream"]:
                # The headers first: a client of a wedged engine gets them and nothing more.
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for payload in completions.stream(gen):
                    self.sse(payload)
                self.write_chunk(b"")
            else:
                self.send_json(200, completions.answer(gen))
            reason = completions.finish_reason(req)
        finally:
            served = engine.finish(req, reason, gen.ttft, time.monotonic() - start)
        if limit is not None and reason is not None and served >= limit:
            self.server.crash(f"crash-after-requests:{limit} reached after {served} requests")


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sock: socket.socket, cfg: dict, engine: Engine, on_crash):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]
        self.cfg = cfg
        self.engine = engine
        self.started = int(time.time())
        self._on_crash = on_crash

    def crash(self, why: str) -> None:
        self._on_crash(why)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        super().handle_error(request, client_address)
