"""inv test.failover: kill one API backend behind HAProxy under load; clients must not notice."""

from __future__ import annotations

from ... import flags, values
from ...output import Masker, Output
from ...services import BACKEND_API as API
from .. import support
from ..support import task
from .shared import KEEPALIVE_HELP, MAX_WAIT_SECONDS, finish_gate, mixed_load

# The background load's hard time cap is the two waits plus this, which covers the incus
# stop/start commands, the WebSocket checks and the lead-in and tail of the load.
LOAD_MARGIN_SECONDS = 300

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
    import secrets

    from ...failover.metrics import ServerMetrics
    from ...failover.plot import write_svg
    from ...failover.sequence import FailoverSettings, FailoverTest
    from ...failover.stoppers import DOWN_TARGETS, STOP_METHODS, make_stopper
    from ...loadtest.engine import MAX_RATE
    from ...loadtest.facade import fetch, open_session
    from ...monitoring.gate import expect_server_down
    from ...monitoring.settings import exporter_address
    from ...roles import haproxy_vars
    from ...transports import connect
    from ..monitor import alert_gate

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
        background = mixed_load(base_url, settings.health_path, rate, keepalive_share, keepalive_connections,
                                 settings.request_timeout,
                                 settings.down_timeout + settings.up_timeout + LOAD_MARGIN_SECONDS,
                                 unsafe_every=settings.post_every, unsafe_path=settings.post_path,
                                 id_prefix=f"failover-{secrets.token_hex(4)}")
    # Every balancer's exporter: with a pair, the one carrying the traffic sees the death first.
    addresses = [exporter_address(host, host.vars_with(haproxy_vars.DEFAULTS)) for host in topology.balancers] \
        if metrics else []
    exporter = [ServerMetrics(f"http://{address}", lb_vars["haproxy_metrics_path"])
                for address in addresses if address] or None
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
    finish_gate("failover", result, report, plot, output, write_svg, test.interruption)
