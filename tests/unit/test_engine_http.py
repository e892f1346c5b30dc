"""The engine's HTTP client (agent/engine_http.py) against real local servers that answer what
each test scripts, byte for byte: framings, streaming, deadlines, garbage, TLS, IPv6.

The server is an asyncio server on a kernel-chosen loopback port; it records each request it
read, so a test can check what the client sent as well as what it made of the answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from harness.ci import missing
from harness.ports import PortLease
from vllm_agent.engine_http import CLOSED, CONNECT, MALFORMED, MAX_HEAD, TIMEOUT, HttpError, request, stream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.url = ""
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # request line, headers, body


@asynccontextmanager
async def serving(answer: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A server that reads each request (line, headers, Content-Length body), then runs ``answer``."""
    server = Server()
    handlers: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            line, *fields = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
            headers = {name.lower(): value.strip() for name, value in (f.split(":", 1) for f in fields)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            server.requests.append((line, headers, body))
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up first: what the test is about
        finally:
            writer.close()

    listener = await asyncio.start_server(on_connection, host, 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://{'[::1]' if ':' in host else host}:{port}"
    try:
        yield server
    finally:
        listener.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await listener.wait_closed()


def replying(*parts: bytes, pause: float = 0.0) -> Handler:
    """Send ``parts`` one write each (``pause`` seconds apart), then close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)

    return answer


def silent() -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return answer


# What the client sends and reads ---------------------------------------------------------------


async def test_a_json_request_and_a_content_length_answer() -> None:
    body = b'{"id": "tiny"}'
    answer = replying(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\nX-A: 1\r\n",
        b"x-a: 2\r\n\r\n" + body,
    )
    async with serving(answer) as server:
        response = await request(
            "POST", f"{server.url}/v1/completions?x=1", json={"prompt": "hi"}, headers={"Authorization": "Bearer k"}
        )
    assert (response.status, response.json(), response.text) == (200, {"id": "tiny"}, body.decode())
    assert response.headers["CONTENT-TYPE"] == "application/json" and "content-length" in response.headers
    assert response.headers.get("X-a") == "1, 2"  # a repeated field, joined as RFC 9110 allows
    line, headers, sent = server.requests[0]
    assert line == "POST /v1/completions?x=1 HTTP/1.1"
    assert json.loads(sent) == {"prompt": "hi"}
    assert headers["content-type"] == "application/json" and headers["authorization"] == "Bearer k"
    # Kept alive (HTTP/1.1's default), so the server waits and the client closes first.
    assert "connection" not in headers and headers["host"] == server.url.removeprefix("http://")


async def test_a_chunked_answer_with_extensions_and_trailers_is_joined() -> None:
    answer = replying(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\nhello\r\n",
        b"1\r\n \r\nA\r\nworld, 10 \r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    )
    async with serving(answer) as server:
        response = await request("GET", f"{server.url}/health")
    assert response.text == "hello world, 10 "


async def test_an_answer_without_a_length_is_read_to_the_end_of_the_connection() -> None:
    async with serving(replying(b"HTTP/1.0 200 OK\r\n\r\nvllm:num_requests_running 1\n", b"more\n")) as server:
        response = await request("GET", f"{server.url}/metrics")
    assert response.text == "vllm:num_requests_running 1\nmore\n"


async def test_no_body_is_read_for_a_204_even_with_the_connection_open() -> None:
    async with serving(replying(b"HTTP/1.1 204 No Content\r\n\r\n", pause=3600)) as server:
        response = await request("GET", f"{server.url}/x", timeout=30)
    assert (response.status, response.body) == (204, b"")


async def test_streamed_lines_arrive_as_the_server_sends_them() -> None:
    # The second event is sent only after the client has seen the first: buffering would hang here.
    first_seen = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        first = b'data: {"n": 1}\r\n\r\n'
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await first_seen.wait()
        for event in (b'data: {"n": 2}\n\ndata: [DO', b"NE]\n\n"):  # a line split across chunks
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")

    lines = []
    async with serving(answer) as server:
        async with stream("POST", f"{server.url}/v1/chat/completions", json={"stream": True}, timeout=30) as response:
            assert response.headers["content-type"] == "text/event-stream"
            async for line in response.lines():
                lines.append(line)
                first_seen.set()
    assert lines == ['data: {"n": 1}', "", 'data: {"n": 2}', "", "data: [DONE]", ""]


async def test_an_ipv6_host_in_brackets() -> None:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError as err:
        missing(f"an IPv6 loopback address: {err}")
    async with serving(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), host="::1") as server:
        response = await request("GET", f"{server.url}/health")
    assert response.text == "ok"
    assert server.requests[0][1]["host"] == server.url.removeprefix("http://")


# Failures: one HttpError each, with a one-line reason ------------------------------------------


async def failure(server: Server, path: str = "/health", **options) -> HttpError:
    with pytest.raises(HttpError) as caught:
        await request("GET", server.url + path, **options)
    assert "\n" not in caught.value.reason
    return caught.value


async def test_nothing_listening_is_connection_refused() -> None:
    with PortLease() as nothing:  # bound, never listening
        with pytest.raises(HttpError) as caught:
            await request("GET", f"http://127.0.0.1:{nothing.port}/health")
    assert (caught.value.kind, caught.value.reason) == (CONNECT, "connection refused")


async def test_an_unknown_host_is_a_name_resolution_failure() -> None:
    with pytest.raises(HttpError) as caught:
        await request("GET", "http://engine.invalid:8000/health", timeout=30)  # .invalid never resolves (RFC 6761)
    assert caught.value.kind == CONNECT
    assert caught.value.reason.startswith("name resolution failed for engine.invalid: ")


async def test_the_deadline_covers_the_whole_request() -> None:
    # Once silent before the headers, once stalling in the middle of the body.
    stalled_body = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", pause=3600)
    for answer in (silent(), stalled_body):
        async with serving(answer) as server:
            started = time.monotonic()
            err = await failure(server, timeout=0.3)
            took = time.monotonic() - started
        assert (err.kind, err.reason) == (TIMEOUT, "timed out after 0.3s")
        assert 0.3 <= took < 10  # it did wait for the deadline, and did not wait on the server


async def test_an_answer_cut_short_is_closed() -> None:
    cut = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ]
    for answer in cut:
        async with serving(replying(answer)) as server:
            err = await failure(server)
        assert (err.kind, err.reason) == (CLOSED, "the connection closed before a complete answer"), answer


async def test_garbage_is_malformed_with_what_was_wrong() -> None:
    garbage = {
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n": "malformed response: status line 'SSH-2.0-OpenSSH_9.2'",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n": "malformed response: header line 'no colon here'",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n": "malformed response: Content-Length '-1'",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n": "malformed response: chunk size '-1'",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n": (
            "malformed response: a chunk longer than its size"
        ),
    }
    for answer, reason in garbage.items():
        async with serving(replying(answer)) as server:
            err = await failure(server)
        assert (err.kind, err.reason) == (MALFORMED, reason)


async def test_sizes_are_bounded_whatever_the_server_sends() -> None:
    huge_head = b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * (2 * MAX_HEAD) + b"\r\n\r\n"
    async with serving(replying(huge_head)) as server:
        err = await failure(server)
    assert (err.kind, err.reason) == (
        MALFORMED,
        f"malformed response: a header or chunk line longer than {MAX_HEAD} bytes",
    )

    announced = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"
    async with serving(replying(announced, pause=3600)) as server:
        err = await failure(server, max_body=1000, timeout=30)  # refused before reading: no wait
    assert err.reason == "answer larger than 1000 bytes (10000000000 announced)"

    endless = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"100\r\n" + b"x" * 256 + b"\r\n"] * 8
    async with serving(replying(*endless)) as server:
        err = await failure(server, max_body=1000)
    assert (err.kind, err.reason) == (MALFORMED, "answer larger than 1000 bytes")

    async with serving(replying(b"HTTP/1.1 200 OK\r\n\r\n", b"data: " + b"x" * 5000)) as server:
        async with stream("GET", server.url, max_body=1000) as response:
            with pytest.raises(HttpError, match="^a line longer than 1000 bytes$"):
                [line async for line in response.lines()]


# TLS, for external deployments behind https ----------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made here by the openssl command."""
    if shutil.which("openssl") is None:
        missing("the openssl command, to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_against_a_server_with_a_certificate_the_client_trusts(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    answer = replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    async with serving(answer, tls=server_side) as server:
        response = await request("GET", f"{server.url}/health", ssl_context=trusting, timeout=30)
        untrusted = await failure(server, timeout=30)  # the system's CAs never signed it
    assert response.text == "ok"
    assert untrusted.kind == CONNECT and untrusted.reason.startswith("TLS failed: "), untrusted.reason
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.reason and re.search("self.signed", untrusted.reason)


# The launcher's path stays light ---------------------------------------------------------------


def test_the_launcher_and_its_engine_plugins_do_not_import_httpx() -> None:
    # A fresh interpreter: this test process has httpx loaded by other tests and fixtures.
    code = (
        "import sys, vllm_agent.unit.launcher, vllm_agent_plugins.health, vllm_agent_plugins.tests_openai\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"


def _time_wait() -> list[tuple[int, int]]:
    """(local port, remote port) of every TCP connection in TIME_WAIT on this host."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "06":
                    found.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)))
    return found


async def test_the_client_closes_first_so_the_engines_port_keeps_no_time_wait() -> None:
    # An engine's next start checks its port with a plain bind, which a TIME_WAIT entry on that
    # port refuses; the side that closes first keeps the entry, so that must be the client.
    async def like_uvicorn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if server.requests[-1][1].get("connection") != "close":
            await reader.read()  # kept alive: open until the client leaves

    async with serving(like_uvicorn) as server:
        for _ in range(3):
            assert (await request("GET", f"{server.url}/health")).status == 200
        port = int(server.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 5
        while not any(remote == port for _, remote in _time_wait()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        entries = _time_wait()
    assert any(remote == port for _, remote in entries), "the client's side should hold the TIME_WAIT"
    assert not any(local == port for local, _ in entries)
