"""inv test.reload: reload HAProxy on every balancer again and again under a mixed load; nothing may fail."""

from __future__ import annotations

from ... import values
from ...output import Masker, Output
from ...services import BACKEND_API as API, BALANCER_GROUP
from .. import support
from ..support import task
from .shared import KEEPALIVE_HELP, MAX_WAIT_SECONDS, finish_gate, mixed_load

RELOAD_HELP = {
    "reloads": "reloads per balancer (default 5), each the role's own reload: server states saved, "
               "'systemctl reload haproxy', a new worker must appear",
    "interval": "seconds between two reloads (default 2)",
    "drain_timeout": "seconds after the last reload for every old worker to end (default 30)",
    "load_rate": "requests per second through the VIP or the balancer (default 60, 2 s timeout; --keepalive-share "
                 "of them on persistent connections, the rest a new connection each)",
    "keepalive_share": KEEPALIVE_HELP["keepalive_share"],
    "keepalive_connections": KEEPALIVE_HELP["keepalive_connections"],
    "report": "write the outcome as JSON: failed requests per reload and per client kind, old workers and how long "
              "each lived after its reload, the steps",
    "plot": "write an SVG timeline: request outcomes by client kind, workers per balancer, the reloads",
    "inventory": support.COMMON_HELP["inventory"],
    "set": support.COMMON_HELP["set"],
}


@task(help=RELOAD_HELP, iterable=["set"])
@support.user_errors
def reload(c, reloads="5", interval="2", drain_timeout="30", load_rate="60", keepalive_share="0.5",
           keepalive_connections="8", report=None, plot=None, inventory=None, set=None):
    """Reload HAProxy on every balancer N times under a mixed load; nothing may fail.

    Each reload is the one haproxy.setup makes. Counts failed requests per reload and per
    client kind (new connection, kept-alive connection), and each old worker's lifetime.
    Exit 0 when every reload started a worker, no request failed and the old workers ended;
    1 otherwise; 2 on bad input.
    """
    from ...failover.reload_plot import write_svg
    from ...failover.reload_test import ReloadRun, ReloadSettings, WorkerSampler, worker_pids
    from ...loadtest.keepalive import kind_line
    from ...roles import haproxy as haproxy_role
    from ...roles import haproxy_vars
    from ...transports import connect

    count = values.integer("--reloads", reloads, 1, 100)
    settings = ReloadSettings(reloads=count, interval=values.flag_number("interval", interval, 600),
                              drain_timeout=values.flag_number("drain-timeout", drain_timeout, MAX_WAIT_SECONDS))
    rate = values.flag_number("load-rate", load_rate, 2000)
    loaded, _ = support.select(c, inventory, BALANCER_GROUP, None, set)
    topology = support.topology(loaded)
    hosts = topology.balancers
    lb_vars = hosts[0].vars_with(haproxy_vars.DEFAULTS)
    problems = haproxy_vars.validate_vars(haproxy_vars.template_vars(hosts[0], loaded))
    if problems:
        raise support.UsageError(problems[0])
    api_hosts = loaded.group(API.group)
    health_path = API.settings((api_hosts[0] if api_hosts else hosts[0]).vars_with(API.defaults)).health_path
    base = f"http://{topology.client_address()}:{int(lb_vars['haproxy_http_port'])}"  # the VIP with a pair
    transports = {host.name: connect(host) for host in hosts}
    budget = count * len(hosts) * (settings.interval + 10) + settings.drain_timeout + 60

    def reloader(host):
        command = haproxy_role.reload_command(haproxy_vars.template_vars(host, loaded))
        transport = transports[host.name]

        def run():
            before = worker_pids(transport)
            result = transport.run(command, warn=True, timeout=60)
            after = worker_pids(transport)
            new = [pid for pid in after if pid not in before]
            if not result.ok:
                return False, f"reload failed: {result.tail(2)}", None
            return True, f"new worker {new[-1] if new else '?'} ({len(after)} running)", new[-1] if new else None
        return run

    load = mixed_load(base, health_path, rate, keepalive_share, keepalive_connections, 2.0, budget)  # checked first
    output = Output(Masker())
    output.line(f"== test.reload: {count} reloads on each of {', '.join(h.name for h in hosts)}, "
                f"{settings.interval:g}s apart, {rate:g} req/s through {base}")
    run = ReloadRun(
        settings, balancers=[h.name for h in hosts], reloaders={h.name: reloader(h) for h in hosts},
        samplers={h.name: WorkerSampler(h.name, lambda cmd, t=transports[h.name]: t.run(cmd, warn=True, timeout=10).stdout,
                                        settings.sample_interval, budget) for h in hosts},
        load=load, output=output,
    )
    result = run.run()
    for entry in result["reloads"]:
        lifetimes = ", ".join(_old_worker(w) for w in entry["old_workers"]) or "none"
        output.line(f"reload {entry['n']} {entry['balancer']}: {entry['failed']}/{entry['requests']} failed "
                    f"({kind_line(entry['by_kind']) if entry['by_kind'] else '-'}); old workers: {lifetimes}")
    output.line(f"by client kind: {kind_line(result['requests']['by_kind'])}; old workers at most "
                f"{result['old_workers']['most_at_once']} at once, longest {result['old_workers']['longest_lifetime_seconds']}s")
    finish_gate("reload", result, report, plot, output, write_svg)


def _old_worker(worker: dict) -> str:
    """``1234 last seen +0.52s`` or ``1234 still running``."""
    if worker["still_running"]:
        return f"{worker['pid']} still running"
    return f"{worker['pid']} last seen +{worker['last_seen_after_reload']}s"
