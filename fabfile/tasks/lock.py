"""inv lock.status / lock.release, and ``held()``: the deploy lock every pool-changing task takes.

The lock lives on the balancer group's first host that answers (see ``deploy/lock.py``).
Deploy, rollback, api/stream setup (they restart units) and haproxy.setup
(it reloads) take it; a second run exits 3 within 2 s naming the holder, or
waits with ``--lock-wait SECONDS``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import threading
import time

from invoke import Collection
from invoke.exceptions import Exit

from .. import exits
from ..shell import RUN_ID
from . import support
from .support import task

LOCK_HELP = {
    "lock_wait": "wait up to SECONDS for another run's deploy lock instead of exiting 3 (default 0)",
    "message": "why this run: recorded in the lock and the audit trail",
}


def who() -> str:
    from ..masking import escaped

    # LOGNAME/USER come from the environment: escaped here, so the lock and the audit trail hold one printable line.
    return escaped(f"{getpass.getuser()}@{socket.gethostname()}")


def stale_seconds(variables) -> float:
    from ..deploy.lock import DEFAULT_STALE_SECONDS
    from ..values import seconds

    return seconds("deploy_lock_stale_seconds", variables.get("deploy_lock_stale_seconds", DEFAULT_STALE_SECONDS),
                   low=1.0)


def lock_wait_value(value) -> float:
    from ..values import seconds

    return seconds("--lock-wait", value if value is not None else 0)


class Held:
    """A lock this process holds: a bounded heartbeat thread keeps it fresh until ``release``."""

    def __init__(self, transport, owner, interval):
        self.transport, self.owner, self.interval = transport, owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="deploy-lock-heartbeat", daemon=True)

    def _beat(self):
        from ..deploy import lock

        while not self._stop.wait(self.interval):
            try:
                self.transport.run(lock.heartbeat(self.owner["run"]), warn=True)
            except Exception:  # a missed beat is not fatal; staleness takes many of them
                continue

    def start(self):
        self._thread.start()
        return self

    def release(self):
        from ..deploy import lock

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


def acquire(loaded, task_name, *, sha256=None, message=None, lock_wait=0.0, audit=None, clock=time.monotonic,
            sleep=time.sleep) -> Held:
    """Take the lock or exit 3 naming the holder (after waiting up to ``lock_wait`` seconds)."""
    from ..deploy import lock
    from ..transports import CommandFailed, connect

    balancer = support.lock_balancer(loaded)
    transport = connect(balancer)
    stale = stale_seconds(balancer.vars)
    owner = lock.owner_record(who=who(), pid=os.getpid(), run=RUN_ID, task=task_name, sha256=sha256,
                              message=message, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    deadline = clock() + lock_wait
    while True:
        try:
            state = lock.parse(transport.run(lock.acquire(owner)).stdout)
        except CommandFailed as exc:
            raise support.UsageError(f"{balancer.name}: deploy lock directory {lock.LOCK_ROOT} is not writable "
                                     f"({exc.result.tail(1) or 'exit ' + str(exc.result.exited)})") from None
        if state.state == lock.TAKEN:
            held = Held(transport, owner, lock.HEARTBEAT_SECONDS).start()
            if audit:
                audit("lock-taken", None, sha256=sha256, message=message)
            return held
        if clock() >= deadline:
            note = (f" — STALE (no heartbeat for {state.age:.0f}s > {stale:g}s): "
                    "inv lock.release --force takes it over") if state.stale(stale) else ""
            print(f"locked: deploy lock on {balancer.name} is held by {state.holder()}{note}", file=sys.stderr)
            raise Exit(code=exits.LOCKED)
        sleep(min(1.0, max(0.05, deadline - clock())))


@contextlib.contextmanager
def held(loaded, task_name, **kwargs):
    """``with held(...)``: the lock for the body, released on success, failure and interruption."""
    audit = kwargs.get("audit")
    holding = acquire(loaded, task_name, **kwargs)
    started = time.monotonic()
    outcome = "failed"
    try:
        yield holding
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except Exit as done:
        outcome = "ok" if not done.code else "failed"
        raise
    finally:
        holding.release()
        if audit:
            try:
                audit("lock-released", None, outcome=outcome, seconds=round(time.monotonic() - started, 3))
            except Exception:
                pass


@task(help={k: support.COMMON_HELP[k] for k in ("inventory", "set")}, iterable=["set"])
@support.user_errors
def status(c, inventory=None, set=None):
    """Who holds the deploy lock (on the first balancer that answers), since when, and whether it is stale."""
    from ..deploy import lock
    from ..transports import connect

    loaded = support.load(c, inventory, set)
    balancer = support.lock_balancer(loaded)
    state = lock.parse(connect(balancer).run(lock.status()).stdout)
    if state.state == lock.FREE:
        print(f"free: no deploy lock on {balancer.name} ({lock.LOCK_DIR})")
        return
    stale = stale_seconds(balancer.vars)
    tag = "STALE" if state.stale(stale) else "held"
    age = f"{state.age:.0f}s" if state.age is not None else "?"
    print(f"{tag}: {state.holder()}; last heartbeat {age} ago (stale after {stale:g}s) on {balancer.name}")


@task(help={**{k: support.COMMON_HELP[k] for k in ("inventory", "set")},
            "force": "release a lock held by another run or a stale one (that run is not stopped)"},
      iterable=["set"])
@support.user_errors
def release(c, inventory=None, force=False, set=None):
    """Release the deploy lock: your own leftover (same user@workstation, pid gone) or, with --force, any."""
    from ..deploy import lock
    from ..transports import connect

    loaded = support.load(c, inventory, set)
    balancer = support.lock_balancer(loaded)
    transport = connect(balancer)
    state = lock.parse(transport.run(lock.status()).stdout)
    if state.state == lock.FREE:
        raise support.UsageError(f"no deploy lock is held on {balancer.name}; nothing to release")
    owner = state.owner
    own_leftover = owner.get("who") == who() and isinstance(owner.get("pid"), int) and not _alive(owner["pid"])
    if not (force or own_leftover):
        print(f"locked: held by {state.holder()}; it is not a leftover of yours: pass --force to release it",
              file=sys.stderr)
        raise Exit(code=exits.LOCKED)
    transport.run(lock.force_release())
    print(f"released: deploy lock on {balancer.name} (was {state.holder()})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


collection = Collection("lock", status, release)
