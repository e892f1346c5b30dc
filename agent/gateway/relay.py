"""A stream once it has started: relayed as it arrives, and carried on by another engine of the
pool when its engine dies (migration.py), at most ``migration_limit`` times. Otherwise the
client gets an SSE error event, never a stream that merely stops.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .migration import DONE, Stream, continuation, error_event, not_migratable
from .routing import Member, Plan
from .server import Responder
from .upstream import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from .proxy import Gateway

INFERENCE = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


async def relay_stream(
    gateway: Gateway,
    kind: str,
    plan: Plan,
    body: dict[str, Any],
    hold: list[Any],
    responder: Responder,
    record: dict[str, Any],
    first: bytes,
) -> None:
    """Relay the stream of ``hold`` ([member, response]), whose ``first`` piece was read; on a
    cut, continue it elsewhere and put the new pair in ``hold`` (the caller releases whatever
    it holds at the end)."""
    member, response = hold
    state = Stream(kind)
    state.begin_segment()
    failed = [member.name]
    migrations = 0
    await responder.write(state.relay(first))
    while True:
        try:
            while chunk := await response.chunk():
                await responder.write(state.relay(chunk))
        except UpstreamError as err:
            cut = str(err)
        else:
            cut = "" if state.done else "the engine ended the stream without [DONE]"
        if not cut:
            responder.end()
            record["migrations"] = migrations
            return
        state.absorb()
        if state.finished:  # the answer was complete; only the end marker was lost
            await responder.write(DONE)
            responder.end()
            return
        reason = not_migratable(kind, body) or state.why_not_continued()
        if reason is None and migrations >= gateway.settings.migration_limit:
            reason = f"the migration limit ({gateway.settings.migration_limit}) was reached"
        nxt = None if reason else await _continue(gateway, kind, plan, body, state, failed)
        if nxt is None:
            reason = reason or "no other ready engine serves this model"
            gateway.metrics.count("migration_failures", failed[-1])
            record["migration_error"] = reason
            await responder.write(
                error_event(f"the engine serving this stream failed ({cut}); it cannot be continued: {reason}")
            )
            responder.end()
            return
        response.release()
        gateway.outstanding[member.name] -= 1
        member, response = hold[0], hold[1] = nxt
        migrations += 1
        record["deployment"] = member.name
        gateway.metrics.count("migrations", member.name)
        state.begin_segment()


async def _continue(
    gateway: Gateway, kind: str, plan: Plan, body: dict[str, Any], state: Stream, failed: list[str]
) -> tuple[Member, UpstreamResponse] | None:
    """Send the continuation to the next ready member of the pool that takes it."""
    path = INFERENCE[kind]
    while True:
        found = gateway.table.candidates(plan, gateway.outstanding, failed, pool_only=True)
        if not found:
            return None
        member = found[0]
        payload = json.dumps(continuation(kind, body, state, member.served)).encode()
        try:
            response = await gateway.send(path, member, payload)
        except UpstreamError:
            failed.append(member.name)
            continue
        if response.status == 200:
            return member, response
        response.release()
        gateway.outstanding[member.name] -= 1
        failed.append(member.name)
