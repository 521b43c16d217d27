"""inv lab.up / lab.status / lab.down: the local Incus lab (see fabfile/lab/)."""

from __future__ import annotations

from invoke import Collection

from ..exits import StepError
from . import support
from .support import task

LAB_HELP = {"inventory": support.COMMON_HELP["inventory"]}


def _run(c, verb: str, inventory: str | None, **kwargs):
    """Run a lab entry point; a lab failure is a failed step (exit 1), bad input exits 2."""
    from ..lab import lifecycle
    from ..lab.base import LabError

    try:
        return getattr(lifecycle, f"lab_{verb}")(support.inventory_path(c, inventory), **kwargs)
    except LabError as exc:
        raise StepError(str(exc)) from None


@task(help=LAB_HELP)
@support.user_errors
def up(c, inventory=None):
    """Build or repair the local Incus lab: daemon, bridge, base image, bare containers, ssh access."""
    _run(c, "up", inventory)


@task(help=LAB_HELP)
@support.user_errors
def status(c, inventory=None):
    """Show each lab container's state, address and role services."""
    _run(c, "status", inventory)


@task(help={**LAB_HELP, "purge": "also remove the image alias, the lab bridge and the storage pool"})
@support.user_errors
def down(c, inventory=None, purge=False):
    """Delete the lab containers (the Incus daemon keeps running)."""
    _run(c, "down", inventory, purge=purge)


collection = Collection("lab", up, status, down)
