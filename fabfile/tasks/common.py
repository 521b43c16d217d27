"""inv common.setup: the baseline every host gets."""

from invoke import Collection

from . import support
from .support import task


@task(help=support.COMMON_HELP, iterable=["set"])
@support.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, forks=10):
    """Baseline on every host: fresh apt lists, ca-certificates/curl/socat, UTC."""
    from ..roles import common

    loaded, hosts = support.select(c, inventory, "all", limit, set)
    support.play("common.setup", loaded, hosts, [common.ROLE], check=check, diff=diff, report=report, forks=forks)


collection = Collection("common", setup)
