"""The audit trail at run time: ``Recorder`` appends the lines ``deploy/audit.py`` builds.

``recorder(event, instance, **fields)`` appends one JSON line on the control host (the balancer that
holds the deploy lock: ``Topology.control_host``) and on the instance concerned. Lines are written
by one background thread, in order, so the audit trail never slows a gate; whatever queued up
meanwhile goes in one round trip per host (a batch of twelve instances makes many events at once).
``close()`` waits (bounded) until every line is written.
"""

from __future__ import annotations

import queue
import threading

from . import audit


class Recorder:
    def __init__(self, control_transport, instance_transports, *, who, run, task_name):
        self.control = control_transport
        self.instances = instance_transports
        self.who, self.run, self.task = who, run, task_name
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self._write, name="audit-writer", daemon=True)
        self.thread.start()

    def __call__(self, event, instance=None, **fields):
        entry = audit.record(event, who=self.who, run=self.run, task=self.task, instance=instance, **fields)
        self.lines.put((entry, instance))

    def _write(self):
        closing = False
        while not closing:
            items = [self.lines.get()]
            while not self.lines.empty():
                items.append(self.lines.get())
            closing = None in items
            entries = [item for item in items if item is not None]
            writes = {self.control: [entry for entry, _ in entries]}
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
