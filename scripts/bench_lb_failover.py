#!/usr/bin/env python3
"""VIP failover and reload benchmark on a lab with a balancer pair (figures for the README; not a timed test).

1. For each VRRP advert interval (default 1, 0.5, 0.3 s) and each kill method (haproxy SIGKILL,
   container stop --force): `inv haproxy.setup --set lb_vrrp_advert_interval=X` then
   `inv test.lb-failover --method M`, one line per run: VIP on the peer after t0 and after the kill
   was issued, failed requests kill->move, failed per client kind (new connection / kept-alive /
   the browser-like client that retries a broken GET once), samples with two holders.
2. CPU saturation at the inventory's interval: 60 s of busy loops on every core of this machine
   (3 per core) and inside both balancers; VRRP state changes counted in both nodes' journals.
3. Reloads: six config-changing `inv haproxy.setup` runs (a different haproxy_timeout_client each,
   4 s apart) under 60 req/s of new-connection and 60 req/s of kept-alive load (8 connections)
   through the VIP; failed requests per run and per client kind.

The lab is put back on the inventory's settings at the end. Run as root after `inv lab.up` and the
setups (`make bench-lb`). Usage: bench_lb_failover.py [INVENTORY] [INTERVAL ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
INV = os.environ.get("INV", str(REPO / ".venv" / "bin" / "inv"))


def inv(*args) -> subprocess.CompletedProcess:
    return subprocess.run([INV, *args], cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def figure(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def main() -> int:
    inventory = sys.argv[1] if len(sys.argv) > 1 else "hosts.yaml"
    intervals = sys.argv[2:] or ["1", "0.5", "0.3"]
    (REPO / "reports").mkdir(exist_ok=True)
    print(f"{'advert':>6} {'method':<8} {'move_t0':>8} {'move_kill':>9} {'failed_kill_to_move':>19} "
          f"{'new':>9} {'keepalive':>9} {'browser':>9} {'retry_once_failed':>17} {'two_holders':>11} passed")
    status = 0
    try:
        for interval in intervals:
            override = f"lb_vrrp_advert_interval={interval}"
            setup = inv("haproxy.setup", "--inventory", inventory, "--set", override)
            if setup.returncode:
                print(f"error: haproxy.setup --set {override}: {setup.stderr.strip()[-300:]}", file=sys.stderr)
                return 1
            for method in ("process", "incus"):
                report = REPO / "reports" / f"lb-bench-{method}-{interval}.json"
                run = inv("test.lb-failover", "--inventory", inventory, "--method", method, "--set", override,
                          "--report", str(report))
                if not report.exists():
                    print(f"{interval:>6} {method:<8} no report: {run.stderr.strip()[-300:]}")
                    status = 1
                    continue
                r = json.loads(report.read_text())
                phase = r["requests"]["phases"].get("kill_to_move", {})
                kinds, browser = r["requests"]["by_kind"], r["browser_client"]["keepalive"]
                print(f"{interval:>6} {method:<8} {figure(r['vip_move_seconds']):>8} "
                      f"{figure(r['vip_move_from_kill_issued_seconds']):>9} "
                      f"{str(phase.get('failed', 0)) + '/' + str(phase.get('total', 0)):>19} "
                      f"{ratio(kinds['new']):>9} {ratio(kinds['keepalive']):>9} {ratio(browser):>9} "
                      f"{r['retry_once_client'].get('failed', 0):>17} {r['vip_samples']['two_holder_samples']:>11} "
                      f"{r['passed']}", flush=True)
                status |= 0 if r["passed"] else 1
        inv("haproxy.setup", "--inventory", inventory)
        status |= cpu_saturation(inventory)
        status |= reloads(inventory)
    finally:
        inv("haproxy.setup", "--inventory", inventory)
    return status


def ratio(counts: dict) -> str:
    return f"{counts.get('failed', 0)}/{counts.get('total', 0)}"


def balancer_transports(inventory: str) -> dict:
    from fabfile.inventory import load_inventory
    from fabfile.services import BALANCER_GROUP
    from fabfile.transports import connect

    loaded = load_inventory(str(REPO / inventory) if not Path(inventory).is_absolute() else inventory)
    return {host.name: connect(host) for host in loaded.group(BALANCER_GROUP)}, loaded


STATE_CHANGES = "journalctl -u keepalived -q -o cat --since @{since} | grep -c 'Entering .* STATE' || true"
BUSY_SECONDS = 60


def cpu_saturation(inventory: str) -> int:
    """60 s of busy loops here and inside both balancers; VRRP state changes on either node must be 0."""
    balancers, _ = balancer_transports(inventory)
    since = int(time.time())
    busy = [subprocess.Popen(["timeout", str(BUSY_SECONDS), sys.executable, "-c", "while True: pass"])
            for _ in range(3 * (os.cpu_count() or 1))]
    try:
        for transport in balancers.values():  # two busy loops in each balancer, ended by timeout there
            transport.run(f"for i in 1 2; do timeout {BUSY_SECONDS} sh -c 'while :; do :; done' "
                          ">/dev/null 2>&1 & done", warn=True, timeout=30)
        time.sleep(BUSY_SECONDS + 2)
    finally:
        for process in busy:  # ours, by PID (timeout ends them anyway)
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=10)
    changes = {name: int((t.run(STATE_CHANGES.format(since=since), warn=True, timeout=30).stdout.strip() or "0")
                         .splitlines()[-1]) for name, t in balancers.items()}
    print(f"cpu saturation {BUSY_SECONDS}s ({len(busy)} busy loops here, 2 in each balancer): VRRP state changes "
          + ", ".join(f"{name} {count}" for name, count in changes.items()), flush=True)
    return 0 if not any(changes.values()) else 1


def reloads(inventory: str, runs: int = 6) -> int:
    """Config-changing haproxy.setup runs under mixed load through the VIP; failed per run and kind."""
    from fabfile.loadtest.keepalive import MixedLoad, kind_counts
    from fabfile.topology import Topology

    _, loaded = balancer_transports(inventory)
    load = MixedLoad(f"http://{Topology.of(loaded).client_address()}:80", "/api/v1/health", rate=120, keepalive_share=0.5,
                     connections=8, timeout=2, max_seconds=30 + 12 * runs)
    load.start()
    time.sleep(2)
    marks = []
    try:
        for run in range(runs):
            marks.append(time.monotonic())
            done = inv("haproxy.setup", "--inventory", inventory, "--set", f"haproxy_timeout_client={31 + run}s")
            if done.returncode:
                print(f"error: haproxy.setup run {run + 1}: {done.stdout.strip()[-300:]}", file=sys.stderr)
            time.sleep(4)
    finally:
        load.stop()
    status = 0
    samples = load.samples
    for run, start in enumerate(marks):
        end = marks[run + 1] if run + 1 < len(marks) else float("inf")
        counts = kind_counts([x for x in samples if start <= x.t < end])
        status |= any(c["failed"] for c in counts.values())
        print(f"reload {run + 1} (haproxy.setup, timeout client {31 + run}s): new {ratio(counts['new'])} failed, "
              f"keepalive {ratio(counts['keepalive'])} failed", flush=True)
    total = kind_counts(samples)
    print(f"reloads total: new {ratio(total['new'])} failed, keepalive {ratio(total['keepalive'])} failed, "
          f"{load.connections_opened} keep-alive connections opened", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
