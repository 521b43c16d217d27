"""The ``ws`` scenario: K WebSocket sessions, each pinned to a backend by the SERVERID cookie.

Session k opens (staggered over the first interval) with ``Cookie: SERVERID=<backend>``,
reads the greeting ``{"instance", "version"}``, then sends an echo every
``interval`` seconds on its own schedule: a sender sends on time and a receiver
matches the answers by their text, so a slow echo never delays the next one
(the open model again; latency from the intended send time). Every echo must
come from the pinned instance; one from another is an ``other`` error and a
stickiness violation. One sample per planned echo, whatever happens: a refused
handshake or a closed session turns the echoes it could not carry into errors,
so error rates compare with the HTTP scenarios.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from .outcomes import OK, OTHER, STATUS, TIMEOUT, Sample, classify_exception, describe_exception

GREETING_TIMEOUT = 5.0


@dataclass
class SessionResult:
    pinned: str
    greeting_instance: str | None = None
    echoes_ok: int = 0
    wrong_instance: int = 0
    closed_early: str = ""  # why the session ended before its last echo


@dataclass
class WsScenario:
    """``sessions`` sessions over ``backends`` (cookie values), one echo per ``interval`` seconds each."""

    url: str  # ws://host:port/api/v1/ws
    backends: list
    sessions: int = 4
    interval: float = 1.0
    timeout: float = 5.0
    cookie_name: str = "SERVERID"
    clock: object = time.monotonic
    results: list = field(default_factory=list)
    name: str = "ws"

    async def run(self, duration: float, record, should_stop=lambda: False) -> None:
        """All sessions for ``duration`` seconds; each planned echo becomes one Sample passed to ``record``."""
        t0 = self.clock()
        echoes = max(1, int(duration / self.interval))
        tasks = [asyncio.ensure_future(self._session(k, t0 + k * self.interval / self.sessions, echoes, record,
                                                     should_stop))
                 for k in range(self.sessions)]
        # Each session ends by itself: its last echo is due before t0 + duration + interval, then one timeout.
        _, pending = await asyncio.wait(tasks, timeout=duration + self.interval + 2 * self.timeout + GREETING_TIMEOUT)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _session(self, k: int, start: float, echoes: int, record, should_stop) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        pinned = self.backends[k % len(self.backends)]
        result = SessionResult(pinned)
        self.results.append(result)
        dues = [start + j * self.interval for j in range(echoes)]
        await asyncio.sleep(max(0.0, start - self.clock()))
        headers = {"Cookie": f"{self.cookie_name}={pinned}"}
        try:
            async with connect(self.url, additional_headers=headers, open_timeout=self.timeout, proxy=None,
                               compression=None, ping_interval=None, close_timeout=1.0) as ws:
                greeting = json.loads(await asyncio.wait_for(ws.recv(), GREETING_TIMEOUT))
                result.greeting_instance = str(greeting.get("instance"))
                await self._echo_loop(ws, k, dues, result, record, should_stop)
        except InvalidStatus as exc:
            status = exc.response.status_code
            self._fail_rest(dues, record, pinned, k, STATUS, f"handshake HTTP {status}", status)
            result.closed_early = f"handshake HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - the session's echoes are recorded as its failure
            result.closed_early = describe_exception(exc)
            self._fail_rest(dues, record, pinned, k, classify_exception(exc), result.closed_early)

    def _fail_rest(self, dues: list, record, pinned: str, k: int, outcome: str, error: str, status=None) -> None:
        """Record every echo still planned (``dues`` is emptied) as failed."""
        now = self.clock()
        for due in dues:
            record(Sample(due, outcome, status, None, max(0.0, now - due), error, key=f"session-{k}:{pinned}",
                          measured=False))
        dues.clear()

    async def _echo_loop(self, ws, k: int, dues: list, result: SessionResult, record, should_stop) -> None:
        """Send on schedule, match answers by text; ``dues`` keeps the echoes not recorded yet."""
        pending: dict = {}  # echo text -> due, sent and not answered
        key = f"session-{k}:{result.pinned}"

        async def receive():
            for _ in range(2 * len(dues) + 1):  # answers plus a few unrelated messages, bounded
                answer = json.loads(await ws.recv())
                due = pending.pop(str(answer.get("echo")), None) if isinstance(answer, dict) else None
                if due is None:
                    continue
                dues.remove(due)
                instance = str(answer.get("instance"))
                if instance == result.pinned:
                    result.echoes_ok += 1
                    record(Sample(due, OK, None, instance, self.clock() - due, key=key))
                else:
                    result.wrong_instance += 1
                    record(Sample(due, OTHER, None, instance, self.clock() - due,
                                  f"stickiness: echo from {instance}, pinned to {result.pinned}", key=key))
                if not dues:
                    return

        receiver = asyncio.ensure_future(receive())
        try:
            for j, due in enumerate(list(dues)):
                await asyncio.sleep(max(0.0, due - self.clock()))
                if should_stop() or receiver.done():
                    break
                pending[f"load-{k}-{j}"] = due
                await ws.send(f"load-{k}-{j}")
            # The last echo gets one timeout to come back.
            await asyncio.wait([receiver], timeout=self.timeout)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        broken = None if receiver.cancelled() else receiver.exception()
        if broken is not None:
            # The session ended under us: every echo it still owed (sent or not) failed that way.
            result.closed_early = describe_exception(broken)
            self._fail_rest(dues, record, result.pinned, k, classify_exception(broken), result.closed_early)
            return
        unanswered = [due for due in dues if due in pending.values()]
        self._fail_rest(unanswered, record, result.pinned, k, TIMEOUT, f"no echo within {self.timeout:g}s")
        # What is left was never sent because the run was stopped: not a request, not counted.

    def report(self) -> dict:
        sticky = [r for r in self.results if r.greeting_instance == r.pinned and not r.wrong_instance]
        return {
            "sessions": self.sessions,
            "interval_seconds": self.interval,
            "sticky_sessions": len(sticky),
            "sticky": len(sticky) == len(self.results) and bool(self.results),
            "per_session": [vars(r) for r in self.results],
        }
