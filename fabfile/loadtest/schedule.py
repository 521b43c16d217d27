"""The constant-arrival-rate (open model) scheduler.

Request ``i`` is due at ``t0 + i / rate``, whatever happened to the earlier
ones: a slow answer never delays the next send, so a stall of the system under
test shows up as the latency of every request that was due during it (no
coordinated omission). Latency is measured from the INTENDED send time, so
even the generator's own lateness (``lag``) counts against the system rather
than hiding it; the lag is recorded separately so the report can show whether
the generator kept up.

Overflow policy: at most ``max_in_flight`` requests are open at once (file
descriptors and memory are finite). A request that is due while the cap is
full is not sent and is recorded as ``dropped`` at its intended time; dropped
requests count as errors, because a real client arriving then would not have
been served either. The cap defaults to rate x timeout (what a server that
answers nothing can hold open) within [16, MAX_IN_FLIGHT], so a healthy run
never drops.

Bounded three ways: ``ceil(rate * duration)`` requests at most, ``duration``
seconds of sending, and each request's own timeout; after the last send the
scheduler waits at most ``drain_timeout`` for the requests still open and
cancels the rest (recorded as ``timeout``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .outcomes import DROPPED, TIMEOUT, Sample, classify_exception, describe_exception

MAX_IN_FLIGHT = 4096  # far below the 20000 open files of the lab host, and a clear memory bound
MIN_IN_FLIGHT = 16
MAX_SLEEP_SLICE = 0.1  # seconds; a long wait between sends is cut in slices so stop() is seen quickly


def default_in_flight(rate: float, timeout: float) -> int:
    """Room for every request that can be open at once when none answers before its timeout."""
    return max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, math.ceil(rate * timeout) + 1))


@dataclass
class Schedule:
    """What to send: ``rate`` per second for ``duration`` seconds, or ``max_requests`` if fewer."""

    rate: float
    duration: float
    max_in_flight: int
    drain_timeout: float
    max_requests: int | None = None

    @property
    def count(self) -> int:
        planned = math.ceil(self.rate * self.duration)
        return max(1, min(planned, self.max_requests) if self.max_requests else planned)


@dataclass
class ScheduleResult:
    started: float  # t0 on the clock
    sent: int = 0
    dropped: int = 0
    cancelled: int = 0
    stopped_early: bool = False
    send_seconds: float = 0.0  # from t0 to the last dispatch


# A request maker: (index, intended send time) -> a Sample whose ``seconds`` is already
# measured from that intended time; it must not raise for network trouble.
Send = Callable[[int, float], Awaitable[Sample]]


async def run_open_loop(send: Send, schedule: Schedule, record: Callable[[Sample], None], *,
                        clock: Callable[[], float] = time.monotonic, should_stop: Callable[[], bool] = lambda: False,
                        method_of: Callable[[int], str] | None = None,
                        started: float | None = None) -> ScheduleResult:
    """Send ``schedule.count`` requests on time, hand every Sample to ``record``; returns once all ended.

    ``method_of(index)``: the HTTP method of request ``index``, stamped on its Sample whatever became
    of it (dropped, cancelled, answered), so that counts by method add up. ``started``: t0 on ``clock``
    (default now), so that loads running side by side share one schedule."""
    result = ScheduleResult(started=clock() if started is None else started)
    in_flight: dict = {}  # task -> (its intended send time, its index)

    def stamped(sample: Sample, index: int) -> Sample:
        if method_of is not None:
            sample.method = method_of(index)
        return sample

    def finished(task: asyncio.Task) -> None:
        _, index = in_flight.pop(task, (None, 0))
        if not task.cancelled():
            record(stamped(task.result(), index))

    for index in range(schedule.count):
        due = result.started + index / schedule.rate
        if not await _sleep_until(due, clock, should_stop):
            result.stopped_early = True
            break
        lag = max(0.0, clock() - due)
        if len(in_flight) >= schedule.max_in_flight:
            result.dropped += 1
            record(stamped(Sample(due, DROPPED, error=f"{schedule.max_in_flight} requests already in flight", lag=lag),
                           index))
            continue
        task = asyncio.ensure_future(_guarded(send, index, due, lag, clock))
        in_flight[task] = (due, index)
        task.add_done_callback(finished)
        result.sent += 1
    result.send_seconds = clock() - result.started
    result.cancelled = await _drain(in_flight, schedule.drain_timeout, lambda sample, index: record(stamped(sample, index)),
                                    clock)
    return result


async def _sleep_until(due: float, clock, should_stop) -> bool:
    """Wait until ``due`` (in slices, watching ``should_stop``); False when asked to stop."""
    for _ in range(1_000_000):  # bounded: each slice is up to MAX_SLEEP_SLICE, or the time is up
        if should_stop():
            return False
        remaining = due - clock()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, MAX_SLEEP_SLICE))
    return True


async def _guarded(send: Send, index: int, due: float, lag: float, clock) -> Sample:
    """``send`` with its lag noted; a bug or an unexpected exception becomes a Sample, not a lost request."""
    try:
        sample = await send(index, due)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified and counted like any failed request
        sample = Sample(due, classify_exception(exc), seconds=clock() - due, error=describe_exception(exc))
    sample.lag = lag
    return sample


async def _drain(in_flight: dict, timeout: float, record, clock) -> int:
    """Wait for the open requests at most ``timeout``; cancel the rest and record them as timeouts
    (``record(sample, index)``)."""
    if not in_flight:
        return 0
    _, still_open = await asyncio.wait(set(in_flight), timeout=timeout)
    requests = {task: in_flight[task] for task in still_open}
    for task in still_open:
        task.cancel()
    if still_open:
        await asyncio.wait(still_open, timeout=1.0)
    now = clock()
    for due, index in requests.values():
        record(Sample(due, TIMEOUT, seconds=now - due, error=f"still open {timeout:g}s after the last send; cancelled"),
               index)
    return len(still_open)
