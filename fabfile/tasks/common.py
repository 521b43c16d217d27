"""inv common.setup: the baseline every host gets."""

from invoke import Collection, task

from .. import cli
from ..roles import common


@task(help=cli.COMMON_HELP, iterable=["set"])
@cli.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None):
    """Baseline on every host: fresh apt lists, ca-certificates/curl/socat, UTC."""
    loaded, hosts = cli.select(c, inventory, "all", limit, set)
    cli.play("common.setup", loaded, hosts, [common.ROLE], check=check, diff=diff, report=report)


collection = Collection("common", setup)
