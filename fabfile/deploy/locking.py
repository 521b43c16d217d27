"""The deploy lock at run time: take it on the topology's control host, keep it fresh, release it.

``deploy/lock.py`` builds the commands (pure); this module carries them out. ``held(...)`` is what
every pool-changing task wraps its work in (deploy, rollback, the setups that restart or reload):
a second run gets ``LockHeld`` (the task exits 3 naming the holder) after waiting up to
``lock_wait`` seconds. While held, a bounded heartbeat thread refreshes the owner file's mtime.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import threading
import time

from ..exits import UsageError
from ..shell import RUN_ID
from . import lock


class LockHeld(Exception):
    """Another run holds the deploy lock; the message names it (exit 3)."""


def who() -> str:
    from ..masking import escaped

    # LOGNAME/USER come from the environment: escaped here, so the lock and the audit trail hold one printable line.
    return escaped(f"{getpass.getuser()}@{socket.gethostname()}")


def stale_seconds(variables) -> float:
    from ..values import seconds

    return seconds("deploy_lock_stale_seconds",
                   variables.get("deploy_lock_stale_seconds", lock.DEFAULT_STALE_SECONDS), low=1.0)


class Heartbeat:
    """A lock this process holds: a bounded heartbeat thread keeps it fresh until ``release``."""

    def __init__(self, transport, owner, interval):
        self.transport, self.owner, self.interval = transport, owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="deploy-lock-heartbeat", daemon=True)

    def _beat(self):
        while not self._stop.wait(self.interval):
            try:
                self.transport.run(lock.heartbeat(self.owner["run"]), warn=True)
            except Exception:  # a missed beat is not fatal; staleness takes many of them
                continue

    def start(self):
        self._thread.start()
        return self

    def release(self):
        from ..transports import TransportError

        self._stop.set()
        self._thread.join(timeout=12)
        # Asked twice (bounded) before giving up; a lock left behind is said, never silent.
        for _ in range(2):
            try:
                if self.transport.run(lock.release(self.owner["run"]), warn=True).ok:
                    return
            except TransportError:
                pass
        print(f"warning: the deploy lock on {self.transport.name} could not be released; "
              "check with `inv lock.status`, release with `inv lock.release`", file=sys.stderr)


def acquire(topology, task_name, *, sha256=None, message=None, lock_wait=0.0, audit=None, clock=time.monotonic,
            sleep=time.sleep) -> Heartbeat:
    """Take the lock on ``topology.control_host()`` or raise ``LockHeld`` naming the holder (after waiting up
    to ``lock_wait`` seconds)."""
    from ..transports import CommandFailed

    balancer = topology.control_host()
    transport = topology.control_transport()
    stale = stale_seconds(balancer.vars)
    owner = lock.owner_record(who=who(), pid=os.getpid(), run=RUN_ID, task=task_name, sha256=sha256,
                              message=message, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    deadline = clock() + lock_wait
    while True:
        try:
            state = lock.parse(transport.run(lock.acquire(owner)).stdout)
        except CommandFailed as exc:
            raise UsageError(f"{balancer.name}: deploy lock directory {lock.LOCK_ROOT} is not writable "
                             f"({exc.result.tail(1) or 'exit ' + str(exc.result.exited)})") from None
        if state.state == lock.TAKEN:
            beating = Heartbeat(transport, owner, lock.HEARTBEAT_SECONDS).start()
            if audit:
                audit("lock-taken", None, sha256=sha256, message=message)
            return beating
        if clock() >= deadline:
            note = (f" — STALE (no heartbeat for {state.age:.0f}s > {stale:g}s): "
                    "inv lock.release --force takes it over") if state.stale(stale) else ""
            raise LockHeld(f"deploy lock on {balancer.name} is held by {state.holder()}{note}")
        sleep(min(1.0, max(0.05, deadline - clock())))


@contextlib.contextmanager
def held(topology, task_name, **kwargs):
    """``with held(...)``: the lock for the body, released on success, failure and interruption.

    ``kwargs['audit']`` (a ``Recorder``) gets ``lock-taken`` and ``lock-released`` lines."""
    audit = kwargs.get("audit")
    holding = acquire(topology, task_name, **kwargs)
    started = time.monotonic()
    outcome = "failed"
    try:
        yield holding
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except Exception as done:  # invoke's Exit carries the task's exit code: 0 is a success
        outcome = "ok" if getattr(done, "code", None) == 0 else "failed"
        raise
    finally:
        holding.release()
        if audit:
            try:
                audit("lock-released", None, outcome=outcome, seconds=round(time.monotonic() - started, 3))
            except Exception:
                pass
