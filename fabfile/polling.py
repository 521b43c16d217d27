"""Bounded waiting: probe something until it is done, or give up with the last thing seen.

``wait_until`` is bounded both in time (``timeout``) and in number of probes
(one per ``interval`` over the timeout, plus the first and a final one), so a
clock that stops moving cannot make it spin forever. The clock and sleep are
injectable so tests run instantly with a fake clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

_NOTHING = object()  # no value seen yet (None is a legitimate probe result)


@dataclass
class Waited:
    """A wait that succeeded: how long it took and the value that satisfied it."""

    elapsed: float
    value: Any


class WaitTimeout(Exception):
    """The condition did not hold in time; carries the last value and error seen."""

    def __init__(self, what: str, timeout: float, elapsed: float, attempts: int, last_value=_NOTHING, last_error=None):
        self.what = what
        self.timeout = timeout
        self.elapsed = elapsed
        self.attempts = attempts
        self.last_value = None if last_value is _NOTHING else last_value
        self.last_error = last_error
        seen = "no value seen" if last_value is _NOTHING else f"last value seen: {last_value!r}"
        message = f"timed out after {timeout:g}s waiting for {what} ({attempts} probes); {seen}"
        if last_error is not None:
            message += f"; last probe error: {type(last_error).__name__}: {last_error}"
        super().__init__(message)


def wait_until(
    probe: Callable[[], Any],
    *,
    timeout: float,
    interval: float,
    done: Callable[[Any], bool] = bool,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "condition",
    error_grace: float | None = None,
) -> Waited:
    """Call ``probe`` every ``interval`` seconds until ``done(value)`` is true.

    Returns ``Waited(elapsed, value)``. An exception raised by the probe counts
    as "not yet" (the thing may simply not be up), but the last one is kept and
    reported. With ``error_grace``, probe errors in a row for that many seconds end the
    wait at once with the last one (something that went away, not something still coming
    up). Raises ``WaitTimeout`` once ``timeout`` seconds have passed or the probe budget
    is spent.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    started = clock()
    deadline = started + timeout
    # First probe, one per interval, and one at the deadline: the count bound.
    max_probes = math.ceil(timeout / interval) + 2
    last_value, last_error = _NOTHING, None
    failing_since = None
    attempts = 0
    while attempts < max_probes:
        attempts += 1
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - a failing probe means "not yet"
            last_error = exc
            failing_since = clock() if failing_since is None else failing_since
            if error_grace is not None and clock() - failing_since >= error_grace:
                raise
        else:
            failing_since = None
            last_value = value
            if done(value):
                return Waited(elapsed=clock() - started, value=value)
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(interval, remaining))
    raise WaitTimeout(what, timeout, clock() - started, attempts, last_value, last_error)
