"""Veza ops: Fabric/Invoke tasks for HAProxy + backend-api + stream-server on Incus.

``ns`` is the root collection; ``tasks.py`` exposes the same one so ``inv`` and ``fab`` agree.
"""

from invoke import Collection

from .lab import lab_collection
from .tasks import common, haproxy, service, test

ns = Collection()
for collection in (lab_collection, common.collection, haproxy.collection, *service.collections, test.collection):
    ns.add_collection(collection)
