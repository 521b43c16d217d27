"""inv haproxy.setup / haproxy.status."""

from dataclasses import asdict

from invoke import Collection

from ..output import Masker, write_report
from ..services import BALANCER_GROUP
from . import support
from .support import task


@task(help={**support.COMMON_HELP, "lock_wait": "wait up to SECONDS for another run's deploy lock instead of exiting 3"},
      iterable=["set"])
@support.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None, forks=10, lock_wait=None):
    """Baseline + HAProxy on the balancers: config rendered, validated with haproxy -c, reloaded only on change.

    With ``lb_vip`` set, keepalived too (see ``inv keepalived.setup``).
    """
    from ..roles import common, haproxy

    loaded, hosts = support.select(c, inventory, BALANCER_GROUP, limit, set)
    topology = support.topology(loaded)
    guard = support.guard(loaded, "haproxy.setup", lock_wait, topology)
    roles, secret_values = [common.ROLE, haproxy.ROLE], {}
    if topology.pair is not None:  # lb_vip set: the pair's keepalived comes with it
        from ..roles import keepalived

        secret_values = support.secrets_for(hosts, None)
        roles.append(keepalived.role_for(secret_values))
    # A reload changes what the pools serve: it takes the deploy lock (a check changes nothing).
    support.play("haproxy.setup", loaded, hosts, roles, check=check, diff=diff, report=report, forks=forks,
                 extra_secrets=secret_values.values(), guard=guard)


@task(help={k: support.COMMON_HELP[k] for k in ("inventory", "limit", "report", "set")}, iterable=["set"])
@support.user_errors
def status(c, inventory=None, limit=None, report=None, set=None):
    """Pools and server states from each balancer's runtime API (show stat), as a table."""
    from ..haproxy_runtime import RuntimeAPIError

    loaded, hosts = support.select(c, inventory, BALANCER_GROUP, limit, set)
    topology = support.topology(loaded)
    rows, unreachable = [], []
    for host in hosts:
        try:
            rows += [{"balancer": host.name, **asdict(stat)} for stat in topology.runtime_api(host).show_stat()]
        except RuntimeAPIError as exc:
            unreachable.append(str(exc))
    print(f"{'balancer':<12} {'pool':<14} {'server':<18} {'status':<10} {'weight':>6} {'sessions':>8}  last check")
    for row in rows:
        print(f"{row['balancer']:<12} {row['pool']:<14} {row['server']:<18} {row['status']:<10} "
              f"{row['weight'] if row['weight'] is not None else '-':>6} {row['current_sessions'] or 0:>8}  {row['last_check'] or '-'}")
    if report:
        write_report(report, rows, Masker())
    if unreachable:
        raise support.StepError("; ".join(unreachable))


collection = Collection("haproxy", setup, status)
