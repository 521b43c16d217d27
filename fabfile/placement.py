"""Placement: which Incus host each instance lives on, and the rules that keep one host's loss survivable.

An instance's host is its Incus remote (``incus_remote``; ``local`` is the machine the tool runs on);
an ssh or local host is a machine of its own. The rules apply once the inventory's instances span
more than one host (with a single host there is no placement to choose):

- the balancer pair (group ``haproxy``) must not sit on one host: losing it would lose the VIP;
- a service pool with two or more instances must not have them all on one host.

``placement_single_host_ok: true`` (inventory or ``--set``) overrides both, for an inventory that
knows what it does. ``deploy_min_up_per_host`` (a count, default 0) is the deploy floor per host: a
batch never takes out a server that would leave fewer than that many of the pool UP on its host.
"""

from __future__ import annotations

from .exits import UsageError
from .values import InvalidValue

OVERRIDE = "placement_single_host_ok"
BALANCER_GROUP = "haproxy"


def host_of(host) -> str:
    """The machine an inventory host runs on: ``incus:REMOTE`` for an Incus instance, else its own address."""
    if host.connection == "incus":
        return f"incus:{host.vars.get('incus_remote') or 'local'}"
    if host.connection == "local":
        return "local"
    return f"ssh:{host.address or host.name}"


def _overridden(hosts) -> bool:
    return any(host.vars.get(OVERRIDE) is True for host in hosts)


def check_placement(inventory, pools) -> None:
    """Raise UsageError (one line, exit 2) when the balancer pair or a pool (``(label, group)`` pairs)
    sits on a single host of an inventory that spans several."""
    every = list(inventory.hosts.values())
    if len({host_of(host) for host in every}) < 2 or _overridden(every):
        return
    for label, group in [("balancer pair", BALANCER_GROUP), *pools]:
        members = inventory.group(group)
        places = {host_of(host) for host in members}
        if len(members) >= 2 and len(places) == 1:
            where = places.pop().split(":", 1)[-1]
            raise UsageError(
                f"{inventory.path}: the {label} ({', '.join(h.name for h in members)}) is all on Incus host '{where}', "
                f"so losing that host loses it; place one elsewhere (incus_remote) or set {OVERRIDE}: true")


def per_host_floor(instances) -> int:
    """``deploy_min_up_per_host`` from the first instance's variables (0: no per-host floor)."""
    if not instances:
        return 0
    value = instances[0].vars.get("deploy_min_up_per_host", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(f"deploy_min_up_per_host: {value!r} is not a count (0 or more servers UP per host)")
    return value


def check_per_host_floor(pool: str, instances, floor: int) -> None:
    """Refuse a per-host floor that holds every server of the pool on some host UP: that server could
    never go out, and the deploy would wait for nothing."""
    if floor <= 0:
        return
    by_host = {}
    for host in instances:
        by_host.setdefault(host_of(host), []).append(host.name)
    for place, names in by_host.items():
        if len(names) <= floor:
            raise InvalidValue(
                f"deploy_min_up_per_host: {floor} keeps all {len(names)} server(s) of {pool} on host "
                f"'{place.split(':', 1)[-1]}' UP ({', '.join(names)}), so they could never go out; "
                f"lower it to at most {len(names) - 1} or place more instances there")


def would_empty_host(name: str, up_servers, hosts: dict, floor: int) -> bool:
    """True when taking ``name`` out leaves fewer than ``floor`` of ``up_servers`` UP on its host.

    ``hosts`` maps server name -> host (``host_of``); a server that is not UP costs nothing."""
    if floor <= 0 or name not in up_servers or name not in hosts:
        return False
    same = sum(1 for server in up_servers if hosts.get(server) == hosts[name])
    return same - 1 < floor
