"""The main process of the contract tests' units: it runs until stopped and talks to systemd
through $NOTIFY_SOCKET when a test signals it, as a service would.

SIGUSR1: send READY=1 (a Type=notify unit becomes active). SIGUSR2: send WATCHDOG=trigger.
Once its handlers are in place it sends STATUS=waiting PID, so a test knows when signalling is
safe (before that, SIGUSR1 would kill it; systemd may still show an earlier process's status).
It never sends WATCHDOG=1.
"""

import os
import signal

from vllm_agent.unit.notify import Notifier

notifier = Notifier()
signal.signal(signal.SIGUSR1, lambda *_: notifier.send(ready=1))
signal.signal(signal.SIGUSR2, lambda *_: notifier.send(watchdog="trigger"))
notifier.status(f"waiting {os.getpid()}")
while True:
    signal.pause()
