"""inv test.lb-failover: kill the balancer holding the VIP under load; the peer takes it, no flapping."""

from __future__ import annotations

from ... import flags
from ...output import Masker, Output
from ...services import BACKEND_API as API, BALANCER_GROUP
from .. import support
from ..support import task
from .shared import KEEPALIVE_HELP, finish_gate, mixed_load

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
    from ...failover.lb_failover import LbFailoverRun, LbFailoverSettings, RetryingClient
    from ...failover.lb_plot import write_svg
    from ...failover.stoppers import IncusStopper, ProcessKiller
    from ...incus import IncusError, exec_argv, instance_ref
    from ...lb_pair import vip_sampler
    from ...loadtest.facade import fetch, open_session
    from ...loadtest.keepalive import KeepAliveLoad, kind_line
    from ...monitoring.gate import expect_balancer_down, unwanted_during_vip_move
    from ...roles import haproxy_vars
    from ...transports import connect
    from ..lb import pair_status
    from ..monitor import alert_gate

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
        load=mixed_load(base, health_path, rate, keepalive_share, keepalive_connections, settings.request_timeout,
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
    finish_gate("lb-failover", result, report, plot, output, write_svg)
