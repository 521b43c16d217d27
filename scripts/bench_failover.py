#!/usr/bin/env python3
"""Backend failover figures per stop method and load rate (for the README; not a timed test).

For each stop method (default incus, unit, freeze, drop) and each background rate (default
20 and 200 requests/s, one POST in ten), `inv test.failover --stop-method M --load-rate R`
and one line of figures from its report: DOWN after the stop was issued, failed GETs, POSTs
caught in the failure window (counted apart, never replayed), when the WebSocket pinned to
the victim was closed and its reconnect landed on the survivor, recovery to UP. Victims
alternate between the two backends. Run as root after `inv lab.up` and the deploys
(`make bench-failover`). Usage: bench_failover.py [INVENTORY] [--methods a,b] [--rates 20,200] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INV = os.environ.get("INV", str(REPO / ".venv" / "bin" / "inv"))
VICTIMS = ("backend-api-1", "backend-api-2")


def figure(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def one_run(inventory: str, method: str, rate: str, victim: str, report: Path) -> str:
    run = subprocess.run([INV, "test.failover", "--inventory", inventory, "--stop-method", method, "--load-rate", rate,
                          "--victim", victim, "--report", str(report)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if not report.exists():
        return f"no report: {run.stderr.strip()[-300:]}"
    r = json.loads(report.read_text())
    by_method = r["requests"]["by_method"]
    gets = by_method.get("GET", {})
    ws = r["websocket"]["seen"]
    return (f"{figure(r['detect_down_from_stop_issued_seconds']):>6} {sum(gets.values()) - gets.get('ok', 0):>3}/"
            f"{sum(gets.values()):<5} {len(r['requests']['unsafe_caught_in_failure_window']):>3}/"
            f"{sum(by_method.get('POST', {}).values()):<4} "
            f"{figure(ws.get('closed', {}).get('seconds_after_down')):>9} "
            f"{figure(ws.get('rebalanced', {}).get('seconds_after_t0')):>10} {figure(r['recover_up_seconds']):>6} "
            f"{'PASSED' if r['passed'] else 'FAILED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inventory", nargs="?", default="hosts.yaml")
    parser.add_argument("--methods", default="incus,unit,freeze,drop")
    parser.add_argument("--rates", default="20,200")
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()
    (REPO / "reports").mkdir(exist_ok=True)
    print(f"{'method':<7} {'rate':>4} {'victim':<14} {'DOWN':>6} {'GET failed':>9} {'POST caught':>8} "
          f"{'ws closed':>9} {'ws rebal.':>10} {'UP':>6} (seconds: DOWN after the stop was issued, ws closed "
          "after DOWN, reconnect on the survivor after t0, recovery)")
    count = 0
    for method in options.methods.split(","):
        for rate in options.rates.split(","):
            for _ in range(max(1, min(options.runs, 10))):
                victim = VICTIMS[count % 2]
                count += 1
                report = REPO / "reports" / f"failover-bench-{method}-{rate}.json"
                report.unlink(missing_ok=True)
                print(f"{method:<7} {rate:>4} {victim:<14} {one_run(options.inventory, method, rate, victim, report)}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
