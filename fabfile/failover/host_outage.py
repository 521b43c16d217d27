"""What taking out a whole Incus host touches, and how HAProxy's view of it is judged (pure).

``plan_outage`` reads the inventory only: the nested lab host (``lab_incus_hosts``) and every instance
placed on it (``incus_remote``), split into the balancers it holds and the pool servers HAProxy must mark
DOWN; it refuses, before anything is touched, a drill that would be an outage (no balancer off the host,
a pool with every server on it). The judgments read a server's status changes as the survivor's runtime
API showed them (``[(clock time, status)]``, one entry per change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..exits import UsageError


@dataclass(frozen=True)
class Server:
    pool: str  # HAProxy backend
    name: str  # server name in it (the inventory host name)

    @property
    def label(self) -> str:
        return f"{self.pool}/{self.name}"


@dataclass
class HostPlan:
    """One drill: the host (its outer lab container, named as its Incus remote), what lives on it, what survives."""

    host: str
    address: str
    balancers: list  # balancer names on the host
    survivors: list  # balancer names elsewhere
    servers: list  # Server on the host, in pool then inventory order
    others: dict = field(default_factory=dict)  # pool -> servers elsewhere

    @property
    def instances(self) -> list:
        return [*self.balancers, *(server.name for server in self.servers)]


def lab_host_entries(inventory) -> list:
    """The ``lab_incus_hosts`` entries (name, address) of the inventory, as lab.up reads them."""
    hosts = list(inventory.hosts.values())
    entries = (hosts[0].vars.get("lab_incus_hosts") if hosts else None) or []
    return [entry for entry in entries if isinstance(entry, dict) and entry.get("name")] \
        if isinstance(entries, list) else []


def pick_host(inventory, name: str | None) -> dict:
    """The ``lab_incus_hosts`` entry to take out: ``name``, or the only one."""
    entries = lab_host_entries(inventory)
    names = [str(entry["name"]) for entry in entries]
    if not entries:
        raise UsageError(f"{inventory.path}: no lab_incus_hosts: test.host-failover stops, freezes or cuts a second "
                         "Incus host nested in the lab (README: A second Incus host)")
    if name is None:
        if len(entries) > 1:
            raise UsageError(f"{inventory.path}: several lab_incus_hosts ({', '.join(names)}); name one with --host")
        return entries[0]
    for entry in entries:
        if str(entry["name"]) == name:
            return entry
    raise UsageError(f"--host {name}: not a lab_incus_hosts entry of {inventory.path} ({', '.join(names)})")


def plan_outage(inventory, entry: dict, balancer_group: str, pools) -> HostPlan:
    """The drill on ``entry``'s host; ``pools``: (inventory group, HAProxy backend) pairs."""
    host = str(entry["name"])

    def on_host(member) -> bool:
        return member.connection == "incus" and member.vars.get("incus_remote") == host

    balancers = inventory.group(balancer_group)
    doomed = [b.name for b in balancers if on_host(b)]
    survivors = [b.name for b in balancers if not on_host(b)]
    servers, others = [], {}
    for group, pool in pools:
        members = inventory.group(group)
        servers += [Server(pool, m.name) for m in members if on_host(m)]
        others[pool] = [m.name for m in members if not on_host(m)]
        if members and not others[pool]:
            raise UsageError(f"every server of {pool} ({', '.join(m.name for m in members)}) is on Incus host "
                             f"'{host}': taking it out would be an outage, not a failover; nothing was touched")
    if not survivors:
        raise UsageError(f"no balancer of '{balancer_group}' is off Incus host '{host}' "
                         f"({', '.join(doomed) or 'none'}): nothing would survive to mark its servers DOWN")
    if not servers and not doomed:
        raise UsageError(f"no instance of {inventory.path} has incus_remote '{host}': the drill would take out nothing")
    return HostPlan(host, str(entry.get("address") or ""), doomed, survivors, servers,
                    {pool: names for pool, names in others.items() if names})


def first_at(changes: list, wanted, after: float | None):
    """The clock time of the first change at or after ``after`` to a status ``wanted(status)`` accepts;
    the status already held at ``after`` counts from ``after`` itself. None if never."""
    if after is None:
        return None
    held = next((status for t, status in reversed(changes) if t <= after), None)
    if held is not None and wanted(held):
        return after
    return next((t for t, status in changes if t > after and wanted(status)), None)


def last_first_at(changes_by_server: dict, servers: list, wanted, after: float | None):
    """When the last of ``servers`` first reached a status ``wanted`` accepts (``first_at`` each); None
    while any has not."""
    times = [first_at(changes_by_server[server], wanted, after) for server in servers]
    return max(times) if times and None not in times else None


def is_up(status: str) -> bool:
    return status == "UP"


def is_down(status: str) -> bool:
    """DOWN by its checks (or MAINT, which a tracked server shows when its own is down)."""
    return status == "DOWN" or status.startswith("MAINT")


def flaps(changes: list, after: float | None) -> list:
    """Every change away from UP after ``after`` (the server back UP): ``[(t, status)]``. "UP 2/3"
    (a check failed, going down) counts as well as DOWN: either way the server did not stay UP."""
    if after is None:
        return []
    return [(t, status) for t, status in changes if t > after and not is_up(status)]


def path(changes: list, rel) -> str:
    """``UP@-0.10 → UP 1/3@0.52 → DOWN@1.31`` (times through ``rel``: seconds after t0)."""
    return " → ".join(f"{status}@{rel(t):.2f}" for t, status in changes) or "-"
