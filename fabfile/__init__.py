"""Veza ops: Fabric/Invoke tasks for HAProxy + backend-api + stream-server on Incus.

``ns`` is the root collection; ``tasks.py`` exposes the same one so ``inv`` and ``fab`` agree.
"""

from invoke import Collection

from .tasks import common

ns = Collection()
ns.add_collection(common.collection)
