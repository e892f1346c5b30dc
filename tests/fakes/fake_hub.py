"""A Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls, with the headers it reads.

Point the real client at it with ``HF_ENDPOINT=hub.url``. Served:

- ``GET /api/models/ORG/NAME[/revision/REV][?blobs=true]``: model info with ``sha`` and
  ``siblings`` (sizes, blob ids, LFS sha256 with ``blobs=true``)
- ``GET /api/models/ORG/NAME/tree/REV[/PATH]?recursive=true``: the file listing (``hf download``)
- ``HEAD|GET /ORG/NAME/resolve/REV/PATH``: ``X-Repo-Commit``, ``ETag`` (git blob id) or, for LFS
  files, ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``; ``Range: bytes=N-`` answers 206
- errors as the Hub sends them (``X-Error-Code``): RepoNotFound (401 without a token, as the Hub
  does, 404 with one), RevisionNotFound (404), EntryNotFound (404), GatedRepo (401 without a
  token, 403 with one that was not granted access)

and the faults a download meets: a throttle (bytes/s over all transfers), a transfer cut after N
bytes (once), a transfer that stops sending after N bytes until released, and refusing every
request (``down``). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")
CHUNK = 64 * 1024


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    branch: str = "main"
    gated: bool = False  # files need a granted token; metadata stays public, as on the Hub
    granted: set[str] = field(default_factory=set)  # tokens with access
    private: bool = False  # invisible without a granted token

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES) or len(self.files[name]) > 10_000_000

    def blob_id(self, name: str) -> str:
        data = self.files[name]
        if self.is_lfs(name):  # git stores the pointer file
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256(name)}\nsize {len(data)}\n"
            data = pointer.encode()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def etag(self, name: str) -> str:
        return self.sha256(name) if self.is_lfs(name) else self.blob_id(name)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


class FakeHub:
    def __init__(self, repos: Mapping[str, FakeRepo] | None = None) -> None:
        self.repos: dict[str, FakeRepo] = dict(repos or {})
        self.requests: list[Seen] = []
        self.rate: float | None = None  # bytes per second over all transfers; None: as fast as it goes
        self.down = False  # refuse every request with a closed connection
        self._cuts: dict[str, int] = {}  # file -> bytes after which the connection is cut, once
        self._holds: dict[str, int] = {}  # file -> bytes after which sending stops until released
        self._hold_once: set[str] = set()
        self.released = threading.Event()
        self.holding = threading.Event()  # set once a transfer stopped at its hold
        self._budget_lock = threading.Lock()
        self._next_send = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cut(self, name: str, after: int) -> None:
        """The next transfer of ``name`` ends after ``after`` bytes (a dropped connection)."""
        self._cuts[name] = after

    def hold(self, name: str, after: int, *, once: bool = False) -> None:
        """Transfers of ``name`` stop sending after ``after`` bytes until ``released`` is set;
        ``once``: only the next transfer (a network that comes back for the retry)."""
        self._holds[name] = after
        if once:
            self._hold_once.add(name)

    def transfers(self, name: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == "GET" and seen.path.endswith(f"/{name}")]

    def _throttle(self, size: int) -> None:
        if not self.rate:
            return
        with self._budget_lock:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + size / self.rate
        if start > now:
            time.sleep(start - now)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            if hub.down:
                self.close_connection = True
                self.connection.close()
                return
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query)
            api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?", path)
            if api:
                self._api(api.group(1), api.group(2), api.group(3) or "main", query)
                return
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if resolve:
                self._resolve(*resolve.groups(), body=body)
                return
            self._error(404, "RepoNotFound", "not a Hub path")

        def _repo(self, repo_id: str, *, files: bool) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if repo is None or (repo.private and token not in repo.granted):
                # As the Hub: 401 without a token (it will not say whether the repo exists).
                self._error(401 if not token else 404, "RepoNotFound", "Repository not found")
                return None
            if files and repo.gated and token not in repo.granted:
                self._error(403 if token else 401, "GatedRepo", "Access to this gated repository is restricted")
                return None
            return repo

        def _revision(self, repo: FakeRepo, revision: str) -> str | None:
            if revision in (repo.branch, repo.commit):
                return repo.commit
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None

        def _api(self, repo_id: str, kind: str | None, revision: str, query: dict[str, list[str]]) -> None:
            repo = self._repo(repo_id, files=False)
            if repo is None or self._revision(repo, revision) is None:
                return
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            if kind == "tree":
                entries = [self._tree_entry(repo, name) for name in sorted(repo.files)]
                self._json(entries)
                return
            siblings = []
            for name in sorted(repo.files):
                sibling: dict[str, object] = {"rfilename": name}
                if blobs:
                    sibling |= {"size": len(repo.files[name]), "blobId": repo.blob_id(name)}
                    if repo.is_lfs(name):
                        sibling["lfs"] = {
                            "size": len(repo.files[name]),
                            "sha256": repo.sha256(name),
                            "pointerSize": 134,
                        }
                siblings.append(sibling)
            self._json(
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.commit,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "tags": [],
                    "siblings": siblings,
                }
            )

        def _tree_entry(self, repo: FakeRepo, name: str) -> dict[str, object]:
            entry: dict[str, object] = {
                "type": "file",
                "oid": repo.blob_id(name),
                "size": len(repo.files[name]),
                "path": name,
            }
            if repo.is_lfs(name):
                entry["lfs"] = {"oid": repo.sha256(name), "size": len(repo.files[name]), "pointerSize": 134}
            return entry

        def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            repo = self._repo(repo_id, files=True)
            if repo is None:
                return
            commit = self._revision(repo, revision)
            if commit is None:
                return
            if name not in repo.files:
                self._error(404, "EntryNotFound", f"{name} does not exist", commit=commit)
                return
            data = repo.files[name]
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged and int(ranged.group(1)) < len(data):
                start = int(ranged.group(1))
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Accept-Ranges", "bytes")
            if repo.is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{repo.sha256(name)}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{repo.sha256(name)}"')
            else:
                self.send_header("ETag", f'"{repo.blob_id(name)}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if body:
                self._send(name, data, start)

        def _send(self, name: str, data: bytes, start: int) -> None:
            cut = hub._cuts.pop(name, None)
            hold = hub._holds.pop(name, None) if name in hub._hold_once else hub._holds.get(name)
            sent = start
            try:
                if cut is None and hold is None and not hub.rate:  # as fast as the socket takes it
                    self.wfile.write(memoryview(data)[start:])
                    return
                while sent < len(data):
                    if hold is not None and sent >= hold and not hub.released.is_set():
                        hub.holding.set()
                        hub.released.wait()
                    end = min(len(data), sent + CHUNK)
                    if cut is not None:
                        end = min(end, max(cut, sent + 1))
                    hub._throttle(end - sent)
                    self.wfile.write(data[sent:end])
                    sent = end
                    if cut is not None and sent >= cut:
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def safetensors(size: int, seed: int = 0) -> bytes:
    """A valid safetensors file holding one uint8 tensor of ``size`` bytes."""
    header = json.dumps({"weight": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    block = hashlib.sha256(b"%d" % seed).digest() * (CHUNK // 32)
    data = (block * (size // len(block) + 1))[:size]
    return len(header).to_bytes(8, "little") + header + data


def model_files(
    shards: int = 1, shard_bytes: int = 4096, *, extra: Mapping[str, bytes] | None = None
) -> dict[str, bytes]:
    """A repository as vLLM models come: config, tokenizer, chat template, safetensors shards
    with their index, plus whatever ``extra`` adds (``*.bin`` twins, ``original/``...)."""
    files = {
        "config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode(),
        "generation_config.json": b'{"do_sample": false}',
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "README.md": b"# a model card\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
    if shards == 1:
        files["model.safetensors"] = safetensors(shard_bytes)
    else:
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        for seed, name in enumerate(names):
            files[name] = safetensors(shard_bytes, seed)
        weight_map = {f"layer{i}.weight": name for i, name in enumerate(names)}
        files["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    files.update(extra or {})
    return files
