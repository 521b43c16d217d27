#!/usr/bin/env python3
"""VIP failover benchmark on a lab with a balancer pair (figures for the README; not a timed test).

For each VRRP advert interval (default 1, 0.5, 0.3 s) and each kill method (haproxy
SIGKILL, container stop --force): `inv haproxy.setup --set lb_vrrp_advert_interval=X`
then `inv test.lb-failover --method M`, and one line of figures per run: VIP on the
peer after t0 and after the kill was issued, failed requests kill->move, the
retry-once client's failures, samples with two holders. The lab is put back on the
inventory's interval at the end. Run as root after `inv lab.up` and the setups
(`make bench-lb`). Usage: bench_lb_failover.py [INVENTORY] [INTERVAL ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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
          f"{'retry_once_failed':>17} {'two_holders':>11} passed")
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
                print(f"{interval:>6} {method:<8} {figure(r['vip_move_seconds']):>8} "
                      f"{figure(r['vip_move_from_kill_issued_seconds']):>9} "
                      f"{str(phase.get('failed', 0)) + '/' + str(phase.get('total', 0)):>19} "
                      f"{r['retry_once_client'].get('failed', 0):>17} {r['vip_samples']['two_holder_samples']:>11} "
                      f"{r['passed']}", flush=True)
                status |= 0 if r["passed"] else 1
    finally:
        inv("haproxy.setup", "--inventory", inventory)
    return status


if __name__ == "__main__":
    sys.exit(main())
