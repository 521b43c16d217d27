#!/usr/bin/env python3
"""Canary figures on the local lab (for the README; not a timed test): `inv api.deploy --canary` of a good
build, one answering 20 % of requests with 500, one 300 ms slower and one crashing 20 s after start, each
under 80 requests/s through the VIP (half on 8 keep-alive connections, half a new connection each, GET
/api/v1/tracks/N), with the default canary settings (steps 10,25,50, 30 s intervals, 2 checks) and with
5 s intervals. Prints per run: decision, seconds from the canary taking traffic to the decision (the bound
interval x checks + interval beside it), the share of requests the canary answered, and the failed
requests of each client kind.

    .venv/bin/python scripts/bench_canary.py [INVENTORY] [--short-only]

Run as root after `make demo` (or the lab tests' deploys); the lab is left on the last good build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fabfile.inventory import load_inventory  # noqa: E402
from fabfile.loadtest.keepalive import MixedLoad, kind_counts  # noqa: E402
from fabfile.tasks import support  # noqa: E402

INV = str(Path(sys.executable).parent / "inv")
RATE = 80
VARIANTS = {"good": (), "500s 20%": ("--error-rate", "0.2"), "300 ms slower": ("--slow-ms", "300"),
            "crash after 20 s": ("--crash-after", "20")}
SETTINGS = {"defaults (30 s x 2)": [], "5 s x 2": ["--canary-interval", "5"]}


def build(version: str, out: Path, *variant) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-demo-api"), "--version", version, "-o", str(out),
                    *variant], check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def run(inventory: str, lb: str, binary: Path, settings: list, work: Path) -> dict:
    report = work / "report.json"
    load = MixedLoad(f"http://{lb}:80", "/api/v1/tracks/7", rate=RATE, keepalive_share=0.5, connections=8, timeout=2,
                     max_seconds=400)
    load.start()
    try:
        done = subprocess.run([INV, "api.deploy", "--inventory", inventory, "--binary", str(binary), "--canary",
                               *settings, "--report", str(report)], cwd=REPO, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
    finally:
        load.stop()
    if done.returncode not in (0, 1) or not report.exists():
        sys.exit(f"api.deploy --canary failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    canary = json.loads(report.read_text())["canary"]
    counts = kind_counts(load.samples)
    return {"exit": done.returncode, **canary, "failed_new": f"{counts['new']['failed']}/{counts['new']['total']}",
            "failed_keepalive": f"{counts['keepalive']['failed']}/{counts['keepalive']['total']}"}


def main(argv) -> int:
    inventory = next((a for a in argv if not a.startswith("--")), "hosts.yaml")
    lb = support.topology(load_inventory(str(REPO / inventory))).client_address()
    settings = {k: v for k, v in SETTINGS.items() if "--short-only" not in argv or k != "defaults (30 s x 2)"}
    print(f"{'settings':<20} {'build':<17} {'decision':<9} {'to decision':>11} {'bound':>6} {'exposed':>8} "
          f"{'intervals':>9}  failed new / keep-alive")
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        work = Path(tmp)
        n = 0
        for label, extra in settings.items():
            for name, variant in VARIANTS.items():
                n += 1
                binary = build(f"bench-canary-{n}", work / f"api-{n}", *variant)
                figures = run(inventory, lb, binary, extra, work)
                plan = figures["plan"]
                print(f"{label:<20} {name:<17} {figures['decision']:<9} {figures['seconds_to_decision'] or 0:>10.1f}s "
                      f"{plan['interval'] * (plan['checks'] + 1):>5g}s {figures['exposed_share']:>8.1%} "
                      f"{len(figures['intervals']):>9}  {figures['failed_new']} / {figures['failed_keepalive']}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
