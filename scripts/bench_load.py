#!/usr/bin/env python3
"""How fast can the load generator drive loopback? Fixed-rate runs against the fake LB in another process.

    .venv/bin/python scripts/bench_load.py [--rates 500,1000,1500,2000] [--duration 5] [--keepalive-share 0.5]

For each rate: achieved ok/s, p99, errors, the generator's CPU share and send lag
p99. The fake LB (scripts/loadtest_fake_lb.py) runs as a separate process so the
generator's CPU is its own; both share this machine's cores.
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fabfile.loadtest.engine import LoadSettings, run_fixed  # noqa: E402


def start_server() -> tuple:
    process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "loadtest_fake_lb.py"), "--max-seconds", "600"],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "PORT <n>", printed once it listens
    if not line.startswith("PORT "):
        process.kill()
        raise SystemExit(f"fake LB did not start: {line!r}")
    return process, int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,1500,2000")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--scenario", default="api", choices=("api", "hls"))
    parser.add_argument("--keepalive-share", type=float, default=0.5,
                        help="share of the rate on 8 persistent connections (0: a new connection per request)")
    args = parser.parse_args()
    process, port = start_server()
    try:
        print(f"{'rate':>6} {'ok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'gen CPU':>8} {'lag p99':>8}")
        for rate in (float(r) for r in args.rates.split(",")):
            report = run_fixed(LoadSettings(f"http://127.0.0.1:{port}", scenarios=(args.scenario,), rate=rate,
                                            duration=args.duration, keepalive_share=args.keepalive_share))
            s, g = report["scenarios"][args.scenario], report["generator"]
            print(f"{rate:6.0f} {s['throughput_rps']:8.1f} {s['latency_ms']['p50'] or 0:8.2f} "
                  f"{s['latency_ms']['p99'] or 0:8.2f} {s['error_count']:7d} {g['cpu_share']:8.0%} "
                  f"{g['lag_p99_ms'] or 0:8.2f}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
