"""The event sink: every AgentEvent as a JSON POST to $VLLM_AGENT_EXAMPLE_WEBHOOK.

``agent_event`` runs inside the daemon and must not block it, so events go into a queue that one
background thread sends. Nothing is sent when the variable is unset. A failed POST is printed to
stderr (the daemon's journal) and dropped: an alert must not pile up behind a dead receiver.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import urllib.request
from dataclasses import asdict
from functools import cache

from vllm_agent.plugin_api import AgentEvent

ENV = "VLLM_AGENT_EXAMPLE_WEBHOOK"
TIMEOUT = 5.0


class WebhookSink:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, event: AgentEvent) -> None:
        url = os.environ.get(ENV)  # read per event, so a test (or a reload) can change it
        if not url:
            return
        body = json.dumps(asdict(event) | {"details": dict(event.details)}).encode()
        self._queue.put((url, body))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._post_forever, name="example-webhook", daemon=True)
                self._thread.start()

    def _post_forever(self) -> None:
        while True:
            url, body = self._queue.get()
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    response.read()
            except OSError as err:
                print(f"vllm-agent-plugin-example: webhook {url} failed: {err}", file=sys.stderr, flush=True)


@cache
def sink() -> WebhookSink:
    return WebhookSink()
