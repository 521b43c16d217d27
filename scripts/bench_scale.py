#!/usr/bin/env python3
"""How cost grows with the number of instances (figures for the README; not a timed test).

On a lab whose API pool has 12 instances (`make bench-scale` generates .lab/hosts-12.yaml with
scripts/lab_inventory.py and brings it up), prints one table:
  - api.setup over the first 2, 6 and 12 instances: fresh (the api role removed from those
    instances first: unit, env file, directories, user; the common baseline stays) and no-op
    (median of 5 re-runs, with their spread);
  - api.deploy of one instance, then of all 12 at --batch 1, 25 % and 50 %, each with the capacity
    floor deploy_min_up=50 %, while a sampler reads HAProxy's pool every 0.3 s (the minimum number
    UP it saw) and 20 req/s go through HAProxy to the API (failed requests counted).

Run as root with the project's venv:  .venv/bin/python scripts/bench_scale.py [--inventory PATH]
The lab is left with every API instance running the last bench build.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fabfile.inventory import load_inventory  # noqa: E402
from fabfile.services import BACKEND_API, BALANCER_GROUP  # noqa: E402
from fabfile.shell import q  # noqa: E402
from bench import inv  # noqa: E402  (scripts/ is on the path: this script's own directory)

FLOOR = "50%"
SAMPLE_EVERY = 0.3
NOOP_RUNS = 5  # no-op re-runs per pool size: the machine is shared, so the median and the spread
RATE = 20.0


def remove_api_role(hosts) -> None:
    """Undo api.setup on ``hosts`` (in parallel) so the next api.setup starts fresh."""
    from fabfile.transports import connect

    def undo(host):
        s = BACKEND_API.settings(host.vars_with(BACKEND_API.defaults))
        unit = q(s.unit)
        connect(host).run(
            f"systemctl disable --now {unit} 2>/dev/null; rm -f /etc/systemd/system/{unit}.service {q(s.env_file)} "
            f"/var/lib/veza-ops/pending-handlers; rm -rf {q(s.install_dir)} {' '.join(q(d) for d in s.writable_dirs)}; "
            f"userdel {q(s.user)} 2>/dev/null; groupdel {q(s.user)} 2>/dev/null; systemctl daemon-reload")

    threads = [threading.Thread(target=undo, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


class PoolSampler:
    """HAProxy's view of the API pool every 0.3 s in a thread: the minimum number of servers UP."""

    def __init__(self, balancer):
        from fabfile.tasks.support import runtime_api

        self.runtime = runtime_api(balancer)
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 900
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                stats = self.runtime.show_stat()
                self.samples.append(sum(s.is_up for s in stats if s.pool == BACKEND_API.pool))
            except Exception:  # a sample the socket did not answer is no sample
                pass
            self.stopping.wait(SAMPLE_EVERY)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=10)


def measured_deploy(binary, balancer, *args) -> dict:
    from fabfile.loadtest.facade import BackgroundLoad
    from fabfile.loadtest.outcomes import OK

    load = BackgroundLoad(f"http://{balancer.address}:80", BACKEND_API.defaults["backend_api_health_path"], rate=RATE,
                          timeout=2.0, max_seconds=600)
    load.start()
    with PoolSampler(balancer) as sampler:
        wall = inv("api.deploy", "--binary", str(binary), "--set", f"deploy_min_up={FLOOR}", *args)
    load.stop()
    failed = sum(sample.outcome != OK for sample in load.samples)
    return {"wall": wall, "min_up": min(sampler.samples) if sampler.samples else None,
            "samples": len(sampler.samples), "failed": failed, "requests": len(load.samples)}


def build_binaries(tags=("a", "b")) -> dict:
    """Builds of the Go stand-in with versions no earlier run deployed: every deploy changes every instance."""
    build = REPO / ".lab" / "build"
    build.mkdir(parents=True, exist_ok=True)
    stamp = str(int(time.time()))
    binaries = {}
    for tag in tags:
        binaries[tag] = build / f"veza-api-scale-{tag}"
        subprocess.run([sys.executable, str(REPO / "scripts" / "build-demo-api"), "--version", f"scale-{stamp}-{tag}",
                        "-o", str(binaries[tag])], check=True, timeout=300, stdout=subprocess.DEVNULL)
    return binaries


def deploy_rounds(pool, balancer, base, rounds) -> int:
    """The ratio the target is about, ``rounds`` times: one instance, then all 12 at --batch 25 %, alternating
    (so both see the same load of the shared machine)."""
    tags = ("a", "b", "c")  # the pool is on one, the single deploy takes the next, the 12 the third: all 12 change
    binaries = build_binaries(tags)
    inv("api.deploy", "--binary", str(binaries["a"]), *base, "--batch", "50%")  # every instance on a binary first
    print(f"{'round':>5} {'one s':>7} {'12@25% s':>9} {'ratio':>6} {'min UP':>7} {'failed/requests':>16}")
    for n in range(rounds):
        single = measured_deploy(binaries[tags[(2 * n + 1) % 3]], balancer, *base, "--limit", pool[0].name)
        quarter = measured_deploy(binaries[tags[(2 * n + 2) % 3]], balancer, *base, "--batch", "25%")
        print(f"{n + 1:>5} {single['wall']:7.2f} {quarter['wall']:9.2f} {quarter['wall'] / single['wall']:6.2f} "
              f"{min(single['min_up'], quarter['min_up'])}/{len(pool):<4} "
              f"{single['failed'] + quarter['failed']}/{single['requests'] + quarter['requests']:<10}", flush=True)
    print(f"floor deploy_min_up={FLOOR} = {len(pool) // 2} UP, sampled every {SAMPLE_EVERY}s; {RATE:g} req/s through HAProxy")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="pools of N: setup and deploy cost over 2, 6 and 12 instances")
    parser.add_argument("--inventory", default=".lab/hosts-12.yaml")
    parser.add_argument("--deploys", type=int, metavar="N", default=0,
                        help="only the one-instance deploy and the 12 at --batch 25%% deploy, N rounds each (no setup rows)")
    args = parser.parse_args(argv)
    loaded = load_inventory(str(REPO / args.inventory))
    pool = loaded.group(BACKEND_API.group)
    balancer = loaded.group(BALANCER_GROUP)[0]
    if len(pool) < 12:
        sys.exit(f"error: {args.inventory} has {len(pool)} API instances; generate 12 with "
                 "scripts/lab_inventory.py --api-instances 12 -o .lab/hosts-12.yaml, then inv lab.up --inventory it")
    base = ["--inventory", args.inventory]
    if args.deploys:
        return deploy_rounds(pool, balancer, base, args.deploys)
    rows, spread = [], {}
    for n in (2, 6, 12):
        limit = ",".join(h.name for h in pool[:n])
        remove_api_role(pool[:n])
        fresh = inv("api.setup", *base, "--limit", limit)
        runs = [inv("api.setup", *base, "--limit", limit) for _ in range(NOOP_RUNS)]
        spread[n] = (min(runs), max(runs))
        noop = statistics.median(runs)
        rows.append(("api.setup fresh", n, fresh, None))
        rows.append(("api.setup no-op", n, noop, None))
    binaries = build_binaries()
    inv("api.deploy", "--binary", str(binaries["a"]), *base, "--batch", "50%")  # every instance on a binary first
    single = measured_deploy(binaries["b"], balancer, *base, "--limit", pool[0].name)
    rows.append(("api.deploy (one instance)", 1, single["wall"], single))
    for batch, tag in (("1", "b"), ("25%", "a"), ("50%", "b")):
        result = measured_deploy(binaries[tag], balancer, *base, "--batch", batch)
        rows.append((f"api.deploy --batch {batch}", len(pool), result["wall"], result))
    print(f"\n{'what':<28} {'inst':>4} {'wall s':>7} {'s/inst':>7} {'min UP':>10} {'failed/requests':>16}")
    for what, n, wall, extra in rows:
        up = f"{extra['min_up']}/{len(pool) if n > 1 else len(pool)}" if extra else "-"
        failed = f"{extra['failed']}/{extra['requests']}" if extra else "-"
        print(f"{what:<28} {n:>4} {wall:7.2f} {wall / n:7.2f} {up:>10} {failed:>16}")
    noop = {n: wall for what, n, wall, _ in rows if what == "api.setup no-op"}
    print(f"\nno-op api.setup: 12 instances / 2 instances = {noop[12] / noop[2]:.2f}x (target <= 1.5x); median of "
          f"{NOOP_RUNS}, min-max " + ", ".join(f"{n}: {low:.2f}-{high:.2f} s" for n, (low, high) in spread.items()))
    quarter = next(r for r in rows if r[0] == "api.deploy --batch 25%")
    print(f"deploy of 12 at --batch 25% / one-instance deploy = {quarter[2] / single['wall']:.2f}x (target <= 4x); "
          f"floor deploy_min_up={FLOOR} = {len(pool) // 2} UP, sampled every {SAMPLE_EVERY}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
