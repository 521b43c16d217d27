"""inv test.failover: the seed's failover smoke test against the inventory's load balancer."""

from __future__ import annotations

import secrets

from invoke import Collection
from invoke.exceptions import Exit

from .. import exits
from ..output import Masker, Output, write_report
from ..services import BACKEND_API as API, BALANCER_GROUP
from .. import flags, values
from . import support
from .load import load
from .support import task

# The background load's hard time cap is the two waits plus this, which covers the incus
# stop/start commands, the WebSocket checks and the lead-in and tail of the load.
LOAD_MARGIN_SECONDS = 300
MAX_WAIT_SECONDS = 3600  # --down-timeout / --up-timeout: a typo guard, far above any real check interval

KEEPALIVE_HELP = {
    "keepalive_share": "share of the background load sent on persistent connections and counted apart from the "
                       "new-connection requests, by method and outcome (default 0.5; 0: new connections only)",
    "keepalive_connections": "persistent connections of that share (default 8, at most 64)",
}


def _mixed_load(base_url: str, path: str, rate: float, share, connections, timeout: float, max_seconds: float,
                **extra):
    """The gates' background load: ``share`` of ``rate`` on ``connections`` kept-alive connections."""
    from ..loadtest import LoadTestError
    from ..loadtest.keepalive import MixedLoad

    try:
        return MixedLoad(base_url, path, rate=rate, keepalive_share=values.flag_number("keepalive-share", share),
                         connections=int(values.flag_number("keepalive-connections", connections)), timeout=timeout,
                         max_seconds=max_seconds, **extra)
    except LoadTestError as exc:
        raise support.UsageError(str(exc)) from None


FAILOVER_HELP = {
    "victim": "the backend_api_instances host to kill (default backend-api-1)",
    "down_timeout": "seconds HAProxy may take to mark the victim DOWN (default 30)",
    "up_timeout": "seconds for the victim to come back UP after the start (default 90)",
    "report": "write the outcome as JSON: passed, steps, detect_down_seconds, recover_up_seconds, requests, websocket",
    "plot": "write an SVG of request outcomes over time with t0/DOWN/UP marked",
    "inventory": support.COMMON_HELP["inventory"],
    "websocket": "WebSocket checks: pinned by the SERVERID cookie, closed at the kill, rebalanced, kept after UP "
                 "(--no-websocket skips them)",
    "load": "continuous background GETs through the LB from before the kill to after UP, failures counted per phase "
            "(--no-load skips it)",
    "load_rate": "background requests per second (default 20, 2 s timeout; --keepalive-share of them on persistent "
                 "connections, the rest a new connection each)",
    "keepalive_share": KEEPALIVE_HELP["keepalive_share"],
    "keepalive_connections": KEEPALIVE_HELP["keepalive_connections"],
    "post_every": "every Nth background request is a POST to --post-path (default 10; 0: GETs only); a POST caught "
                  "between the failure and DOWN may fail (never replayed) and is counted apart",
    "post_path": "the API route the background POSTs go to (default /api/v1/plays; the request id rides in ?id=)",
    "metrics": "check HAProxy's Prometheus exporter (haproxy_metrics_bind): the victim's haproxy_server_status "
               "reads DOWN within 1 s of the runtime API and haproxy_server_check_up_down_total rose by one "
               "(default when haproxy_metrics_bind is set; --no-metrics skips it)",
    "alerts": "with a monitoring group: the victim's VezaServerDown alert must not fire before the stop, fire in "
              "Alertmanager within its rule's budget after DOWN and resolve within its budget after UP "
              "(--no-alerts skips it)",
    "stop_method": "incus: 'incus stop --force' / 'incus start' of the victim's container (default for an incus "
                   "connection; a remote: prefix addresses that Incus remote); unit: SIGKILL then 'systemctl stop' "
                   "of veza-backend-api, later 'systemctl start' (default for ssh); freeze: SIGSTOP of its main "
                   "process (a hang: connections accepted, never answered), later SIGCONT; drop: an nftables table "
                   "in the victim silently drops its port both ways (needs nft there), later deleted",
}


def _pick_victim(loaded, victim: str):
    hosts = loaded.group(API.group)
    for host in hosts:
        if host.name == victim:
            return host
    raise support.UsageError(f"--victim {victim}: not a host of {API.group} "
                         f"({', '.join(h.name for h in hosts) or 'empty'}) in {loaded.path}")


def _metrics_url(balancer, lb_vars: dict) -> str | None:
    """The exporter's base URL from haproxy_metrics_bind (a wildcard bind is reached on the balancer's address)."""
    bind = str(lb_vars["haproxy_metrics_bind"] or "")
    if not bind:
        return None
    address, _, port = bind.rpartition(":")
    address = address.strip("[]")
    if address in ("", "*", "0.0.0.0", "::"):
        address = balancer.address
    return f"http://{f'[{address}]' if ':' in address else address}:{port}"


@task(help=FAILOVER_HELP)
@support.user_errors
def failover(c, victim="backend-api-1", down_timeout="30", up_timeout="90", report=None, plot=None, inventory=None,
             websocket=True, load=True, load_rate="20", stop_method=None, metrics=True, post_every="10",
             post_path="/api/v1/plays", alerts=True, keepalive_share="0.5", keepalive_connections="8"):
    """Kill one API backend behind HAProxy and prove clients never notice; always starts it again.

    Steps: 0 pool all UP; 1 five GETs through the LB; 2 stop the victim (t0);
    3 HAProxy marks it DOWN; 4 five GETs while it is down; 5 start it, UP again.
    Plus WebSocket stickiness, a continuous load and the Prometheus exporter's
    view (see the flags). Exit 0 only when every step passed; 1 on a failed
    step; 2 on bad input; 130 on Ctrl-C (after the victim is back).
    """
    from ..failover.metrics import ServerMetrics
    from ..failover.sequence import FailoverSettings, FailoverTest
    from ..failover.stoppers import DOWN_TARGETS, STOP_METHODS, make_stopper
    from ..loadtest.engine import MAX_RATE
    from ..loadtest.facade import fetch, open_session
    from ..monitoring.gate import expect_server_down
    from ..roles import haproxy_vars
    from ..transports import connect
    from .monitor import alert_gate

    down_seconds = values.flag_number("down-timeout", down_timeout, MAX_WAIT_SECONDS)
    up_seconds = values.flag_number("up-timeout", up_timeout, MAX_WAIT_SECONDS)
    rate = values.flag_number("load-rate", load_rate, MAX_RATE) if load else None
    posts = flags.integer("post-every", post_every, 0, 1000)
    values.url_path("--post-path", post_path)
    if stop_method is not None and stop_method not in STOP_METHODS:
        raise support.UsageError(f"--stop-method {stop_method}: use one of {', '.join(STOP_METHODS)}")
    loaded, _ = support.select(c, inventory, API.group, None)
    victim_host = _pick_victim(loaded, victim)
    topology = support.topology(loaded)
    address = topology.client_address()  # the VIP when the inventory has a pair
    runtime = topology.runtime()  # gates see every balancer
    lb_vars = topology.balancers[0].vars_with(haproxy_vars.DEFAULTS)
    api_settings = API.settings(victim_host.vars_with(API.defaults))
    try:
        stopper = make_stopper(stop_method, victim_host, connect(victim_host), API.unit, api_settings.listen_port)
    except ValueError as exc:
        raise support.UsageError(str(exc)) from None
    settings = FailoverSettings(
        victim=victim, pool=API.pool, health_path=api_settings.health_path,
        ws_path=lb_vars["haproxy_api_ws_path"], cookie_name=lb_vars["haproxy_cookie_name"],
        down_timeout=down_seconds, up_timeout=up_seconds, websocket=websocket, load=load,
        post_every=posts, post_path=post_path, down_target=DOWN_TARGETS[stopper.method],
    )
    port = int(lb_vars["haproxy_http_port"])
    base_url = f"http://{address}:{port}"
    background = None
    if load:
        background = _mixed_load(base_url, settings.health_path, rate, keepalive_share, keepalive_connections,
                                 settings.request_timeout,
                                 settings.down_timeout + settings.up_timeout + LOAD_MARGIN_SECONDS,
                                 unsafe_every=settings.post_every, unsafe_path=settings.post_path,
                                 id_prefix=f"failover-{secrets.token_hex(4)}")
    # Every balancer's exporter: with a pair, the one carrying the traffic sees the death first.
    urls = [_metrics_url(host, host.vars_with(haproxy_vars.DEFAULTS)) for host in topology.balancers] \
        if metrics else []
    exporter = [ServerMetrics(url, lb_vars["haproxy_metrics_path"]) for url in urls if url] or None
    output = Output(Masker())
    output.line(f"LB {base_url}, runtime API via {runtime.name}, "
                + (f"metrics {', '.join(e.url for e in exporter)}" if exporter
                   else "no metrics (haproxy_metrics_bind unset or --no-metrics)"))
    gate = alert_gate(loaded, expect_server_down, API.pool, victim) if alerts else None
    if gate is not None:
        output.line(f"alert: {gate.expectation.describe()}, budgets {gate.expectation.fire_budget:g}s after DOWN, "
                    f"{gate.expectation.resolve_budget:g}s after UP")
    test = FailoverTest(
        settings, runtime=runtime, stopper=stopper, alerts=gate,
        http_get=lambda path, headers, timeout: fetch(base_url, path, headers, timeout),
        ws_connect=lambda path, cookie: open_session(f"ws://{address}:{port}{path}", cookie=cookie,
                                                     timeout=settings.ws_timeout),
        load=background, metrics=exporter, output=output, floor=support.floor_of(loaded, API),
    )
    result = test.run()
    _write_outputs(result, report, plot, output)
    output.line(f"-- test.failover: {'PASSED' if result['passed'] else 'FAILED'}"
                f"{' (interrupted)' if result['interrupted'] else ''}")
    if result["interrupted"]:
        raise Exit(code=support.exit_code_of(test.interruption))
    if not result["passed"]:
        raise Exit(code=exits.FAILED)


def _write_outputs(result: dict, report: str | None, plot: str | None, output: Output, write_svg=None) -> None:
    """The JSON report (masked) and the SVG timeline (``write_svg``: test.failover's unless given)."""
    if write_svg is None:
        from ..failover.plot import write_svg
    if report:
        write_report(report, result, output.masker)
        output.line(f"report: {report}")
    if plot:
        write_svg(plot, result)
        output.line(f"plot: {plot}")


LB_METHODS = ("incus", "process")
LB_FAILOVER_HELP = {
    "method": "incus: 'incus stop --force' of the VIP holder's container, later 'incus start' (default); "
              "process: SIGKILL of haproxy then 'systemctl stop haproxy' on the holder, later 'systemctl start'",
    "report": "write the outcome as JSON: VIP move time, failed requests per phase, retry-once client, WebSocket, "
              "VIP samples (two holders / none), moves after the return",
    "plot": "write an SVG timeline: VIP ownership per node, request outcomes, kill/move/return marks",
    "inventory": support.COMMON_HELP["inventory"],
    "load_rate": "background requests per second through the VIP (default 20, 2 s timeout; --keepalive-share of "
                 "them on persistent connections, the rest a new connection each)",
    "keepalive_share": KEEPALIVE_HELP["keepalive_share"],
    "keepalive_connections": KEEPALIVE_HELP["keepalive_connections"],
    "set": support.COMMON_HELP["set"],
    "alerts": "with a monitoring group: the killed balancer's VezaBalancerExporterDown alert must not fire before the "
              "kill, fire in Alertmanager within its rule's budget after it and resolve within its budget after the "
              "node is back; VezaVipHoldersNotOne must never fire (--no-alerts skips it)",
}


@task(help=LB_FAILOVER_HELP, iterable=["set"])
@support.user_errors
def lb_failover(c, method="incus", report=None, plot=None, inventory=None, load_rate=20.0, set=None, alerts=True,
                keepalive_share="0.5", keepalive_connections="8"):
    """Kill the balancer holding the VIP under load; the peer takes it, clients barely notice, no flapping.

    Steps: one VIP holder; a sticky WebSocket through the VIP; kill the holder (t0);
    the peer holds the VIP and answers; the WebSocket was closed and a reconnect with
    its cookie lands on the same backend; the node comes back and the VIP moves back
    at most once. VIP ownership is sampled on both nodes every 100 ms throughout.
    Exit 0 when every step passed; 1 otherwise; the killed node is always started again.
    """
    from ..failover.lb_failover import LbFailoverRun, LbFailoverSettings, RetryingClient
    from ..failover.stoppers import IncusStopper, ProcessKiller
    from ..incus import IncusError, exec_argv, instance_ref
    from ..lb_pair import vip_sampler
    from ..loadtest.facade import fetch, open_session
    from ..loadtest.keepalive import KeepAliveLoad, kind_line
    from ..monitoring.gate import expect_balancer_down, unwanted_during_vip_move
    from ..roles import haproxy_vars
    from ..transports import connect
    from .lb import pair_status
    from .monitor import alert_gate

    if method not in LB_METHODS:
        raise support.UsageError(f"--method {method}: use one of {', '.join(LB_METHODS)}")
    rate = flags.number("load-rate", load_rate, 0.5, 200)
    loaded, _ = support.select(c, inventory, BALANCER_GROUP, None, set)
    topology = support.topology(loaded)
    pair = topology.pair
    if pair is None:
        raise support.UsageError(f"{loaded.path}: no lb_vip on group '{BALANCER_GROUP}': test.lb-failover "
                                 "needs a balancer pair behind a VIP")
    hosts = {h.name: h for h in topology.balancers}
    for host in hosts.values():
        if host.connection != "incus":
            raise support.UsageError(f"balancer '{host.name}': connection {host.connection}; the 100 ms VIP samplers "
                                     "run through incus exec (an incus-connected lab)")
    try:
        refs = {name: instance_ref(h.vars.get("incus_name", name), h.vars.get("incus_remote")) for name, h in hosts.items()}
    except IncusError as exc:
        raise support.UsageError(str(exc)) from None
    rows = pair_status(topology)
    holders = [row["balancer"] for row in rows if row["holds_vip"]]
    not_ready = [f"{row['balancer']} (keepalived {row['keepalived']}, haproxy {row['haproxy']})" for row in rows
                 if (row["keepalived"], row["haproxy"]) != ("active", "active")]
    if len(holders) != 1 or not_ready:
        raise support.StepError(f"pre-flight: VIP {pair.vip} held by {', '.join(holders) or 'nobody'}"
                                f"{'; not ready: ' + ', '.join(not_ready) if not_ready else ''}; run inv haproxy.setup")
    holder = holders[0]
    peer = next(name for name in hosts if name != holder)
    lb_vars = hosts[holder].vars_with(haproxy_vars.DEFAULTS)
    api_hosts = loaded.group(API.group)
    health_path = API.settings((api_hosts[0] if api_hosts else hosts[holder]).vars_with(API.defaults)).health_path
    port = int(lb_vars["haproxy_http_port"])
    settings = LbFailoverSettings(
        method=method, vip=pair.vip, port=port, health_path=health_path, ws_path=lb_vars["haproxy_api_ws_path"],
        cookie_name=lb_vars["haproxy_cookie_name"], interface=pair.interface, preempt=pair.preempt,
        preempt_delay=pair.preempt_delay, advert_interval=pair.advert_interval, load_rate=rate)
    base = f"http://{pair.vip}:{port}"
    stopper = IncusStopper(refs[holder]) if method == "incus" else ProcessKiller(connect(hosts[holder]))

    def node_ready() -> bool:
        row = next(r for r in pair_status(topology) if r["balancer"] == holder)
        return (row["keepalived"], row["haproxy"]) == ("active", "active") and row["vrrp_state"] in ("BACKUP", "MASTER")

    def fetch_ok() -> bool:
        try:
            return fetch(base, health_path, timeout=0.5).status == 200
        except OSError:
            return False

    max_seconds = 300
    output = Output(Masker())
    gate = alert_gate(loaded, expect_balancer_down, holder, unwanted=unwanted_during_vip_move) if alerts else None
    output.line(f"== test.lb-failover: VIP {pair.vip} on {holder} (peer {peer}), kill by {stopper.describe('stop')}, "
                f"advert {pair.advert_interval:g}s, preemption {'on' if pair.preempt else 'off'}")
    run = LbFailoverRun(
        settings, holder=holder, peer=peer,
        sampler_argv=lambda node, secs: exec_argv(refs[node], vip_sampler(pair.interface, secs).command),
        stopper=stopper, node_ready=node_ready,
        load=_mixed_load(base, health_path, rate, keepalive_share, keepalive_connections, settings.request_timeout,
                         max_seconds),
        # As a browser: kept-alive connections, a GET that broke on one is sent again on a fresh one.
        browser=KeepAliveLoad(base, health_path, rate=settings.retry_rate, connections=4,
                              timeout=settings.request_timeout, max_seconds=max_seconds, retry_idempotent=True),
        retrying=RetryingClient(lambda timeout: fetch(base, health_path, timeout=timeout), settings.retry_rate,
                                settings.request_timeout, max_seconds),
        open_ws=lambda cookie: open_session(f"ws://{pair.vip}:{port}{settings.ws_path}", cookie=cookie, timeout=5.0),
        fetch_ok=fetch_ok, output=output, alerts=gate,
    )
    result = run.run()
    phases = result["requests"]["phases"]
    output.line("requests per phase: " + ", ".join(f"{name} {p['failed']}/{p['total']} failed"
                                                   for name, p in phases.items()))
    output.line(f"by client kind: {kind_line(result['requests']['by_kind'])}; "
                f"browser-like client (keep-alive, retries a broken GET once): {kind_line(result['browser_client'])}")
    output.line(f"retry-once client: {result['retry_once_client']}")
    from ..failover.lb_plot import write_svg

    _write_outputs(result, report, plot, output, write_svg)
    output.line(f"-- test.lb-failover: {'PASSED' if result['passed'] else 'FAILED'}")
    if not result["passed"]:
        raise Exit(code=exits.FAILED)


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
    from ..failover.reload_plot import write_svg
    from ..failover.reload_test import ReloadRun, ReloadSettings, WorkerSampler
    from ..loadtest.keepalive import kind_line
    from ..roles import haproxy as haproxy_role
    from ..roles import haproxy_vars
    from ..transports import connect

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
            before = _workers(transport)
            result = transport.run(command, warn=True, timeout=60)
            after = _workers(transport)
            new = [pid for pid in after if pid not in before]
            if not result.ok:
                return False, f"reload failed: {result.tail(2)}", None
            return True, f"new worker {new[-1] if new else '?'} ({len(after)} running)", new[-1] if new else None
        return run

    load = _mixed_load(base, health_path, rate, keepalive_share, keepalive_connections, 2.0, budget)  # checked first
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
    _write_outputs(result, report, plot, output, write_svg)
    output.line(f"-- test.reload: {'PASSED' if result['passed'] else 'FAILED'}")
    if not result["passed"]:
        raise Exit(code=exits.FAILED)


def _old_worker(worker: dict) -> str:
    """``1234 last seen +0.52s`` or ``1234 still running``."""
    if worker["still_running"]:
        return f"{worker['pid']} still running"
    return f"{worker['pid']} last seen +{worker['last_seen_after_reload']}s"


def _workers(transport) -> list:
    """The haproxy master's worker PIDs on a balancer."""
    result = transport.run('m=$(systemctl show -p MainPID --value haproxy); pgrep -P "$m" haproxy', warn=True,
                           timeout=30)
    return result.stdout.split()


from .host_failover import host_failover  # noqa: E402 - after the helpers it imports from here at run time

collection = Collection("test", failover, load, lb_failover, reload, host_failover)
