"""inv audit [--last N]: the audit trail of the first balancer that answers as a table; ``Recorder`` writes it."""

from __future__ import annotations

import queue
import threading

from invoke import Collection

from . import support
from .support import task


class Recorder:
    """``recorder(event, instance, **fields)`` appends one JSON line on the balancer and on the instance.

    Lines are written by one background thread, in order, so the audit trail never slows a gate;
    whatever queued up meanwhile goes in one round trip per host (a batch of twelve instances
    makes many events at once). ``close()`` waits (bounded) until every line is written.
    """

    def __init__(self, balancer_transport, instance_transports, *, who, run, task_name):
        self.balancer = balancer_transport
        self.instances = instance_transports
        self.who, self.run, self.task = who, run, task_name
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self._write, name="audit-writer", daemon=True)
        self.thread.start()

    def __call__(self, event, instance=None, **fields):
        from ..deploy import audit

        entry = audit.record(event, who=self.who, run=self.run, task=self.task, instance=instance, **fields)
        self.lines.put((entry, instance))

    def _write(self):
        from ..deploy import audit

        closing = False
        while not closing:
            items = [self.lines.get()]
            while not self.lines.empty():
                items.append(self.lines.get())
            closing = None in items
            entries = [item for item in items if item is not None]
            writes = {self.balancer: [entry for entry, _ in entries]}
            for entry, instance in entries:
                if instance in self.instances:
                    writes.setdefault(self.instances[instance], []).append(entry)
            for transport, lines in writes.items():
                if not lines:
                    continue
                try:
                    transport.run(audit.append(*lines), warn=True)
                except Exception:  # a host that does not answer loses these lines, never the deploy
                    continue

    def close(self, timeout=20.0):
        self.lines.put(None)
        self.thread.join(timeout=timeout)


@task(help={**{k: support.COMMON_HELP[k] for k in ("inventory", "set")}, "last": "how many lines (default 20)"},
      iterable=["set"])
@support.user_errors
def audit(c, last=20, inventory=None, set=None):
    """The last N deploy events (lock, drain, maint, push, restart, ready, rollback) from the first balancer that answers."""
    from ..deploy import audit as trail
    from ..transports import connect
    from ..values import integer

    count = integer("--last", last, 1, 100000)
    loaded = support.load(c, inventory, set)
    entries = trail.parse(connect(support.lock_balancer(loaded)).run(trail.tail(count)).stdout)
    for row in trail.table(entries):
        print(row)


collection = Collection(audit)
