"""inv haproxy.setup / haproxy.status."""

from dataclasses import asdict

from invoke import Collection, task

from .. import cli
from ..haproxy_runtime import RuntimeAPI
from ..roles import common, haproxy
from ..runner import Masker, write_report
from ..transports import connect


@task(help=cli.COMMON_HELP, iterable=["set"])
@cli.user_errors
def setup(c, inventory=None, limit=None, check=False, diff=False, report=None, set=None):
    """Baseline + HAProxy on the haproxy group: config rendered, validated with haproxy -c, reloaded only on change."""
    loaded, hosts = cli.select(c, inventory, "haproxy", limit, set)
    cli.play("haproxy.setup", loaded, hosts, [common.ROLE, haproxy.ROLE], check=check, diff=diff, report=report)


@task(help={k: cli.COMMON_HELP[k] for k in ("inventory", "limit", "report", "set")}, iterable=["set"])
@cli.user_errors
def status(c, inventory=None, limit=None, report=None, set=None):
    """Pools and server states from HAProxy's runtime API (show stat), as a table."""
    loaded, hosts = cli.select(c, inventory, "haproxy", limit, set)
    rows = []
    for host in hosts:
        for stat in RuntimeAPI(connect(host)).show_stat():
            rows.append({"balancer": host.name, **asdict(stat)})
    print(f"{'balancer':<12} {'pool':<14} {'server':<18} {'status':<10} {'weight':>6} {'sessions':>8}  last check")
    for row in rows:
        print(f"{row['balancer']:<12} {row['pool']:<14} {row['server']:<18} {row['status']:<10} "
              f"{row['weight'] if row['weight'] is not None else '-':>6} {row['current_sessions'] or 0:>8}  {row['last_check'] or '-'}")
    if report:
        write_report(report, rows, Masker())


collection = Collection("haproxy", setup, status)
