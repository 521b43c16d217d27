"""inv test.host-failover: a whole second Incus host out under load (fabfile/failover/host_failover.py)."""

from __future__ import annotations

from ... import flags, values
from ...services import BALANCER_GROUP, SERVICES
from .. import support
from ..support import task
from .shared import KEEPALIVE_HELP, MAX_WAIT_SECONDS, finish_gate, mixed_load

HOST_FAILOVER_HELP = {
    "method": "stop: 'incus stop --force' of the host's outer lab container, later 'incus start' (default); "
              "freeze: 'incus pause' (every process on it hangs, its kernel still answers), later 'incus resume'; "
              "cut: its port on the lab bridge set down on this machine (a pulled cable), later up",
    "host": "the lab_incus_hosts entry to take out (default: the only one)",
    "down_budget": "seconds after t0 within which HAProxy on the surviving balancer must mark every pool server on "
                   "the host DOWN (default 5)",
    "vip_budget": "seconds after t0 within which the surviving balancer must hold the VIP (default 5)",
    "dwell": "seconds the host stays out once everything on it is DOWN (default 3)",
    "up_timeout": "seconds for its servers to be UP again once the host is back (default 60)",
    "settle": "seconds every server must stay UP after the last came back: no flapping (default 10)",
    "load_rate": "requests per second through the VIP (default 20, 2 s timeout; --keepalive-share of them on "
                 "persistent connections, the rest a new connection each)",
    "keepalive_share": KEEPALIVE_HELP["keepalive_share"],
    "keepalive_connections": KEEPALIVE_HELP["keepalive_connections"],
    "report": "write the outcome as JSON: DOWN and UP times per server, VIP move, host return, failed requests "
              "per phase and per client kind, the steps",
    "plot": "write an SVG timeline: request outcomes by client kind, each server's state, VIP holders, the marks",
    "inventory": support.COMMON_HELP["inventory"],
    "set": support.COMMON_HELP["set"],
}


@task(help=HOST_FAILOVER_HELP, iterable=["set"])
@support.user_errors
def host_failover(c, method="stop", host=None, down_budget="5", vip_budget="5", dwell="3", up_timeout="60",
                  settle="10", load_rate="20", keepalive_share="0.5", keepalive_connections="8", report=None,
                  plot=None, inventory=None, set=None):
    """Take a whole second Incus host out under load; its servers go DOWN, the VIP stays served; bring it back.

    Steps: host and pools ready; load through the VIP; stop, freeze or cut the host (t0);
    every pool server on it DOWN on the surviving balancer within the budget; the VIP on the
    survivor; the survivors carry the load; the host back, its servers UP, no flapping, the
    VIP where keepalived puts it; 0 failed new-connection requests, at most one failure per
    kept-alive connection. Exit 0 when every step passed; 1 otherwise; 2 on bad input; 130/143
    on Ctrl-C/SIGTERM, after the host is back.
    """
    from ...failover.host_failover import HostFailoverRun, HostFailoverSettings
    from ...failover.host_outage import pick_host, plan_outage
    from ...failover.host_plot import write_svg
    from ...failover.server_watch import ServerSampler
    from ...failover.stoppers import HOST_METHODS, make_host_stopper, undo_host_leftovers
    from ...failover.vip_watch import VipSampler
    from ...incus import IncusError, exec_argv, instance_ref
    from ...lab.base import LabError
    from ...lab.incus_hosts import check_lab_route
    from ...lb_pair import vip_sampler
    from ...loadtest.engine import MAX_RATE
    from ...loadtest.keepalive import kind_line
    from ...output import Masker, Output
    from ...roles import haproxy_vars

    if method not in HOST_METHODS:
        raise support.UsageError(f"--method {method}: use one of {', '.join(HOST_METHODS)}")
    settings = HostFailoverSettings(
        method=method, down_budget=values.flag_number("down-budget", down_budget, MAX_WAIT_SECONDS),
        vip_budget=values.flag_number("vip-budget", vip_budget, MAX_WAIT_SECONDS),
        dwell=values.flag_number("dwell", dwell, MAX_WAIT_SECONDS),
        up_timeout=values.flag_number("up-timeout", up_timeout, MAX_WAIT_SECONDS),
        settle=values.flag_number("settle", settle, MAX_WAIT_SECONDS))
    rate = flags.number("load-rate", load_rate, 0.5, MAX_RATE)
    loaded, _ = support.select(c, inventory, BALANCER_GROUP, None, set)
    entry = pick_host(loaded, host)
    services = list(SERVICES.values())
    plan = plan_outage(loaded, entry, BALANCER_GROUP, [(config.group, config.pool) for config in services])
    topology = support.topology(loaded)
    network = loaded.hosts[next(iter(loaded.hosts))].vars.get("lab_network") or ""
    try:
        stopper = make_host_stopper(method, plan.host, network)
        refs = {h.name: instance_ref(h.vars.get("incus_name", h.name), h.vars.get("incus_remote"))
                for h in topology.balancers if h.connection == "incus"}
    except (ValueError, IncusError) as exc:
        raise support.UsageError(str(exc)) from None
    pair = topology.pair
    if pair is not None:
        missing = [h.name for h in topology.balancers if h.name not in refs]
        if missing:
            raise support.UsageError(f"balancer {', '.join(missing)}: not reached through incus; the 100 ms VIP "
                                     "samplers run through incus exec (an incus-connected lab)")
        settings.preempt, settings.preempt_delay = pair.preempt, pair.preempt_delay
    # What the readiness probe asks each server on the host directly: its own health endpoint, by name.
    endpoints = []
    for config in services:
        for member in loaded.group(config.group):
            if any(server.name == member.name and server.pool == config.pool for server in plan.servers):
                service = config.settings(member.vars_with(config.defaults))
                endpoints.append((member.name, f"http://{member.address}:{service.listen_port}", service.health_path))
    try:  # nothing goes to an address on the host unless the kernel routes it through the lab bridge
        for address in {plan.address, *(url.split("//")[1].rsplit(":", 1)[0] for _, url, _ in endpoints)} - {""}:
            check_lab_route(address, network or None)
    except LabError as exc:
        raise support.UsageError(str(exc)) from None
    survivor = topology.balancer(plan.survivors[0])
    lb_vars = survivor.vars_with(haproxy_vars.DEFAULTS)
    health_path = endpoints[0][2] if endpoints else "/api/v1/health"
    base = f"http://{topology.client_address()}:{int(lb_vars['haproxy_http_port'])}"

    def host_ready():
        return _host_ready(plan, topology, endpoints)

    output = Output(Masker())
    run = HostFailoverRun(
        settings, plan, stopper=stopper, host_ready=host_ready,
        undo_leftovers=lambda: undo_host_leftovers(plan.host, network),
        servers=ServerSampler(topology.runtime_api(survivor), plan.servers, 0.1, settings.budget_seconds),
        load=mixed_load(base, health_path, rate, keepalive_share, keepalive_connections, 2.0,
                         settings.budget_seconds, id_prefix="host-failover"),
        output=output,
        vip_sampler=(lambda node, seconds: VipSampler(node, exec_argv(refs[node], vip_sampler(pair.interface, seconds)
                                                                      .command), pair.vip).start())
        if pair is not None else None)
    result = run.run()
    for entry in result["instances"]:
        output.line(f"{entry['pool']}/{entry['server']}: DOWN {_seconds(entry['down_seconds'])} after t0, UP "
                    f"{_seconds(entry['up_seconds'])} after the start")
    vip = result["vip"]
    output.line(f"VIP: held before by {', '.join(vip['held_before']) or '-'}, on {result['survivor']} "
                f"{_seconds(vip['move_seconds'])} after t0; host back {_seconds(result['host_back_seconds'])} "
                f"after the start")
    phases = result["requests"]["phases"]
    output.line("requests per phase: " + ", ".join(f"{name} {p['failed']}/{p['total']} failed"
                                                   for name, p in phases.items()))
    output.line(f"by client kind: {kind_line(result['requests']['by_kind'])}")
    finish_gate("host-failover", result, report, plot, output, write_svg, run.interruption)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _host_ready(plan, topology, endpoints):
    """(ready, detail): the outer container running, each server on the host answering its own health
    endpoint under its own name, each balancer on it with keepalived and haproxy active."""
    from ...incus_api import Incus
    from ...loadtest.facade import fetch
    from ..lb import pair_status

    state = Incus().query(f"/1.0/instances/{plan.host}/state") or {}
    status = str(state.get("status", "missing"))
    if status != "Running":
        return False, f"outer container {status}"
    answered = []
    for name, base, path in endpoints:
        try:
            reply = fetch(base, path, timeout=1.0)
        except OSError as exc:
            return False, f"{name} does not answer {path} ({exc})"
        if reply.status != 200 or reply.instance != name:
            return False, f"{name}: HTTP {reply.status} from {reply.instance or '?'}"
        answered.append(name)
    detail = f"running, {', '.join(answered) or 'no server'} answering"
    if plan.balancers and topology.pair is not None:
        rows = {row["balancer"]: row for row in pair_status(topology)}
        for name in plan.balancers:
            row = rows.get(name, {})
            if (row.get("keepalived"), row.get("haproxy")) != ("active", "active") or \
                    row.get("vrrp_state") not in ("BACKUP", "MASTER"):
                return False, f"{name}: keepalived {row.get('keepalived')}, haproxy {row.get('haproxy')}, " \
                              f"VRRP {row.get('vrrp_state')}"
            detail += f", {name} {row['vrrp_state']}"
    return True, detail
