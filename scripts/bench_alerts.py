#!/usr/bin/env python3
"""Alert latencies on the lab (figures for the README; not a timed test): `make bench-alerts`.

Faults made by our own means (the incus CLI and systemctl inside the containers), one after the
other, each on a quiet lab (no alert active in Alertmanager before it starts):

    backend     incus stop --force of backend-api-1's container    -> VezaServerDown{api_pool, backend-api-1}
    stream      systemctl stop veza-stream-server on stream-server-1 -> VezaServerDown{stream_pool, stream-server-1}
    balancer    incus stop --force of the balancer without the VIP   -> VezaBalancerExporterDown{instance}
    vip         systemctl stop keepalived on both balancers at once  -> VezaVipHoldersNotOne

For each: seconds from the fault to the alert in Alertmanager's API, from the repair to its
resolution, both against the rule's budget, and every other alert seen meanwhile. Exit 1 when an
alert was late, missing, or the lab was not quiet first. Usage: bench_alerts.py [INVENTORY] [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fabfile.inventory import load_inventory  # noqa: E402
from fabfile.monitoring import rules as alert_rules  # noqa: E402
from fabfile.monitoring.api import MonitorAPI  # noqa: E402
from fabfile.monitoring.gate import AlertExpectation, AlertGate  # noqa: E402
from fabfile.monitoring.settings import MonitoringSettings  # noqa: E402
from fabfile.roles.monitoring import rules_for  # noqa: E402
from fabfile.transports import connect  # noqa: E402

QUIET_TIMEOUT = 120


def incus(*args: str) -> None:
    subprocess.run(["incus", *args], check=True, timeout=120, capture_output=True)


def in_container(host, command: str) -> str:
    return connect(host).run(command, timeout=60).stdout


def metrics(url: str) -> str:
    """An exporter's text ('' when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.read().decode()
    except OSError:
        return ""


def server_state(balancer, pool: str, server: str):
    """The server's state in HAProxy's exporter on ``balancer`` (None when it does not answer)."""
    text = metrics(f"http://{balancer.address}:8405/metrics")
    if not text:
        return None
    prefix = f'haproxy_server_status{{proxy="{pool}",server="{server}",state="'
    return next((line[len(prefix):].split('"')[0] for line in text.splitlines()
                 if line.startswith(prefix) and line.endswith(" 1")), None)


def wait_for(probe, timeout: float = 120) -> float:
    """Poll ``probe`` every 0.1 s until true (bounded); the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not probe() and time.monotonic() < deadline:
        time.sleep(0.1)
    return time.monotonic()


def wait_quiet(api: MonitorAPI) -> list:
    """Until Alertmanager shows no active alert (bounded); returns what was still active."""
    deadline = time.monotonic() + QUIET_TIMEOUT
    active = api.alerts()
    while active and time.monotonic() < deadline:
        time.sleep(1)
        active = api.alerts()
    return active


def main() -> int:
    inventory = load_inventory(str(REPO / (sys.argv[1] if len(sys.argv) > 1 else "hosts.yaml")))
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    monitor = inventory.group("monitoring")[0]
    settings = MonitoringSettings.from_vars(monitor.vars)
    rules = rules_for(inventory, settings)
    api = MonitorAPI(connect(monitor), settings)
    hosts = inventory.hosts
    balancers = inventory.group("haproxy")
    vip = str(balancers[0].vars.get("lb_vip"))
    holder = next(b for b in balancers if f" {vip}/" in in_container(b, "ip -4 -o addr show"))
    spare = next(b for b in balancers if b is not holder)

    def name(host):
        return host.vars.get("incus_name", host.name)

    def expect(alert, **labels):
        rule = alert_rules.find(rules, alert)
        return AlertExpectation(alert, labels, rule.budget(settings), rule.resolve_budget(settings))

    api_victim, stream_victim = hosts["backend-api-1"], hosts["stream-server-1"]

    def state_is(pool, server, wanted):
        return lambda: server_state(holder, pool, server) == wanted

    def answers(balancer):
        return lambda: server_state(balancer, "api_pool", api_victim.name) is not None

    def stop_keepalived_on_both():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda b: in_container(b, "systemctl stop keepalived"), balancers))

    def vip_holders() -> int:
        """Holders as the balancers' node exporters report them (what the rule sums)."""
        return sum(int(float(line.rsplit(" ", 1)[1])) for b in balancers
                   for line in metrics(f"http://{b.address}:9100/metrics").splitlines()
                   if line.startswith("veza_keepalived_vip_held{"))

    # (label, expected alert, break, when the fault shows, repair, when the repair shows)
    faults = [
        ("backend", expect(alert_rules.SERVER_DOWN, proxy="api_pool", server=api_victim.name),
         lambda: incus("stop", "--force", name(api_victim)), state_is("api_pool", api_victim.name, "DOWN"),
         lambda: incus("start", name(api_victim)), state_is("api_pool", api_victim.name, "UP")),
        ("stream", expect(alert_rules.SERVER_DOWN, proxy="stream_pool", server=stream_victim.name),
         lambda: in_container(stream_victim, "systemctl stop veza-stream-server"),
         state_is("stream_pool", stream_victim.name, "DOWN"),
         lambda: in_container(stream_victim, "systemctl start veza-stream-server"),
         state_is("stream_pool", stream_victim.name, "UP")),
        ("balancer", expect(alert_rules.BALANCER_DOWN, instance=spare.name),
         lambda: incus("stop", "--force", name(spare)), lambda: True,
         lambda: incus("start", name(spare)), answers(spare)),
        ("vip", expect(alert_rules.VIP_HOLDERS, vip=vip), stop_keepalived_on_both, lambda: vip_holders() == 0,
         lambda: [in_container(b, "systemctl start keepalived") for b in balancers],
         lambda: vip_holders() == 1),
    ]
    print("fired: seconds from the fault showing (HAProxy's DOWN; the stop's return for a balancer; both node "
          "exporters reporting no VIP holder)")
    print("resolved: seconds from the repair showing (HAProxy's UP; the exporter answering; one holder reported)")
    print(f"{'fault':<9} {'alert':<42} {'fired':>6} {'budget':>6} {'resolved':>8} {'budget':>6}  also active")
    status = 0
    for _ in range(rounds):
        for label, expectation, break_it, broken, repair, repaired in faults:
            left = wait_quiet(api)
            if left:
                print(f"{label:<9} lab not quiet after {QUIET_TIMEOUT}s: {', '.join(a.name for a in left)}")
                return 1
            seen = set()

            def read_alerts():
                alerts = api.alerts()
                seen.update(f"{a.name}{{{','.join(f'{k}={v}' for k, v in sorted(a.labels.items()) if k != 'severity')}}}"
                            for a in alerts if not a.matches(expectation.alert, expectation.labels))
                return alerts

            marks: dict = {}
            gate = AlertGate(read_alerts, expectation, marks)
            break_it()
            fired = gate.wait_fired(wait_for(broken))
            repair()
            resolved = gate.wait_resolved(wait_for(repaired))
            r = gate.report()

            def fig(value):
                return "-" if value is None else f"{value:.2f}"
            print(f"{label:<9} {expectation.describe():<42} {fig(r.get('fire_seconds')):>6} "
                  f"{r['fire_budget_seconds']:>6g} {fig(r.get('resolve_seconds')):>8} {r['resolve_budget_seconds']:>6g}  "
                  f"{', '.join(sorted(seen)) or '-'}", flush=True)
            if not (fired.passed and resolved.passed):
                status = 1
    left = wait_quiet(api)
    print(f"quiet at the end: {'yes' if not left else 'no: ' + ', '.join(a.name for a in left)}")
    return status if not left else 1


if __name__ == "__main__":
    sys.exit(main())
