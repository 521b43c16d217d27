"""inv lock.status / lock.release: the deploy lock every pool-changing task takes (``deploy/locking.py``).

The lock lives on the topology's control host, the first balancer that answers (see ``topology.py``).
Deploy, rollback, api/stream setup (they restart units) and haproxy.setup (it reloads) take it; a
second run exits 3 within 2 s naming the holder, or waits with ``--lock-wait SECONDS``.
"""

from __future__ import annotations

import os
import sys

from invoke import Collection
from invoke.exceptions import Exit

from .. import exits
from . import support
from .support import task

def _control(c, inventory, set_values):
    """The lock's balancer and a connection to it, from the inventory's topology."""
    loaded = support.load(c, inventory, set_values)
    topology = support.topology(loaded)
    return topology.control_host(), topology.control_transport()


@task(help={k: support.COMMON_HELP[k] for k in ("inventory", "set")}, iterable=["set"])
@support.user_errors
def status(c, inventory=None, set=None):
    """Who holds the deploy lock (on the first balancer that answers), since when, and whether it is stale."""
    from ..deploy import lock
    from ..deploy.locking import stale_seconds

    balancer, transport = _control(c, inventory, set)
    state = lock.parse(transport.run(lock.status()).stdout)
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
    from ..deploy.locking import who

    balancer, transport = _control(c, inventory, set)
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
