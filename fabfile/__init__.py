"""Veza ops: Fabric/Invoke tasks for HAProxy + backend-api + stream-server on Incus.

``ns`` is the root collection; ``tasks.py`` exposes the same one so ``inv`` and ``fab``
agree. Only what ``inv --list`` needs is imported here: each task imports the
modules it runs (Jinja2, the runner, Fabric for ssh hosts) when it runs.
"""

import atexit
import gc

from invoke import Collection

from .tasks import audit, common, haproxy, inventory, lab, lb, lock, monitor, service, site, test

ns = Collection()
for collection in (lab.collection, inventory.collection, common.collection, haproxy.collection,
                   lb.keepalived_collection, lb.lb_collection, *service.collections, site.collection,
                   test.collection, lock.collection, monitor.collection):
    ns.add_collection(collection)
ns.add_task(audit.audit)  # root level: inv audit [--last N]

# The interpreter's last garbage collections at exit walk every object the run made (Invoke, Jinja2, the
# transports: 20-80 ms on the lab host, a third of a no-op haproxy.setup's budget). The process is ending:
# what is still alive is left for the OS to reclaim (the standard streams are still flushed).
atexit.register(gc.freeze)
