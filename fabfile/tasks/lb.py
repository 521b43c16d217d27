"""inv keepalived.setup / lb.status: the VIP in front of the HAProxy pair."""

from __future__ import annotations

from invoke import Collection

from ..output import Masker, write_report
from ..services import BALANCER_GROUP
from . import support
from .support import task


@task(help={**support.COMMON_HELP, "secrets": "secrets file holding the VRRP password (default: the inventory's "
            "secrets_file)", "lock_wait": "wait up to SECONDS for another run's deploy lock instead of exiting 3"},
      iterable=["set"])
@support.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, forks=10, secrets=None,
          lock_wait=None):
    """keepalived on the balancer pair: VRRP unicast, VIP lb_vip, config checked with keepalived -t, reload on change."""
    from ..roles import common, keepalived

    loaded, hosts = support.select(c, inventory, BALANCER_GROUP, limit, set)
    topology = support.topology(loaded)
    if topology.pair is None:
        raise support.UsageError(f"{loaded.path}: no lb_vip on group '{BALANCER_GROUP}'; set it (and a second "
                                 "balancer) to run keepalived")
    guard = support.guard(loaded, "keepalived.setup", lock_wait, topology)
    secret_values = support.secrets_for(hosts, secrets)
    support.play("keepalived.setup", loaded, hosts, [common.ROLE, keepalived.role_for(secret_values)], check=check,
                 diff=diff, report=report, forks=forks, extra_secrets=secret_values.values(),
                 guard=guard)


def pair_status(topology) -> list:
    """One row per balancer: VIP held, VRRP state and priorities, keepalived and haproxy unit states."""
    from .. import lb_pair
    from ..transports import TransportError

    pair = topology.pair
    rows = []
    for host in topology.balancers:
        try:
            result = topology.transport(host).run(lb_pair.node_state(), warn=True)
            state = lb_pair.parse_node_state(result.stdout, pair.vip)
        except (TransportError, OSError) as exc:
            state = {"holds_vip": None, "vrrp_state": "unreachable", "priority": None, "effective_priority": None,
                     "keepalived": "-", "haproxy": "-", "error": str(exc)}
        rows.append({"balancer": host.name, "address": host.address, **state})
    return rows


@task(help={k: support.COMMON_HELP[k] for k in ("inventory", "report", "set")}, iterable=["set"])
@support.user_errors
def status(c, inventory=None, report=None, set=None):
    """Who holds the VIP; VRRP state and priority, keepalived and HAProxy state per balancer."""
    loaded, _ = support.select(c, inventory, BALANCER_GROUP, None, set)
    topology = support.topology(loaded)
    pair = topology.pair
    if pair is None:
        raise support.UsageError(f"{loaded.path}: no lb_vip on group '{BALANCER_GROUP}': one balancer, no VIP "
                                 "(inv haproxy.status shows it)")
    rows = pair_status(topology)
    holders = [row["balancer"] for row in rows if row["holds_vip"]]
    print(f"VIP {pair.vip}: held by {', '.join(holders) if holders else 'NOBODY'}"
          f"{'  <- TWO HOLDERS' if len(holders) > 1 else ''}")
    print(f"{'balancer':<14} {'address':<15} {'vip':<4} {'vrrp':<12} {'priority':>8} {'effective':>9} "
          f"{'keepalived':<11} haproxy")
    for row in rows:
        vip = "-" if row["holds_vip"] is None else ("yes" if row["holds_vip"] else "no")
        print(f"{row['balancer']:<14} {row['address'] or '-':<15} {vip:<4} {row['vrrp_state']:<12} "
              f"{row['priority'] if row['priority'] is not None else '-':>8} "
              f"{row['effective_priority'] if row['effective_priority'] is not None else '-':>9} "
              f"{row['keepalived']:<11} {row['haproxy']}")
    if report:
        write_report(report, {"vip": pair.vip, "holders": holders, "balancers": rows}, Masker())
    if len(holders) != 1:
        raise support.StepError(f"VIP {pair.vip} has {len(holders)} holders; expected exactly one")


keepalived_collection = Collection("keepalived", setup)
lb_collection = Collection("lb", status)
