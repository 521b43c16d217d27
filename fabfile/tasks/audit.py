"""inv audit [--last N]: the audit trail of the lock's balancer (``deploy/recorder.py`` writes it), as a table."""

from __future__ import annotations

from invoke import Collection

from . import support
from .support import task


@task(help={**{k: support.COMMON_HELP[k] for k in ("inventory", "set")}, "last": "how many lines (default 20)"},
      iterable=["set"])
@support.user_errors
def audit(c, last=20, inventory=None, set=None):
    """The last N deploy events (lock, drain, maint, push, restart, ready, rollback) from the first balancer that answers."""
    from ..deploy import audit as trail
    from ..flags import integer

    count = integer("last", last, 1, 100000)
    loaded = support.load(c, inventory, set)
    entries = trail.parse(support.topology(loaded).control_transport().run(trail.tail(count)).stdout)
    for row in trail.table(entries):
        print(row)


collection = Collection(audit)
