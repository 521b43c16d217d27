#!/usr/bin/env python3
"""Remote Incus instances at local speed? Issue 26's target: a no-op `inv site.setup` with a third of the
hosts on the second Incus host <= 1.2x the same all-local.

1. One command (`echo; exit 3`, output and exit code checked) on a lab instance: local API (unix socket),
   remote CLI (`incus exec REMOTE:NAME`), remote API (HTTPS, kept connection): medians, p95, max, and
   for the remote API a loop of EXEC_LOOP commands counted for hangs (over HANG_S seconds).
2. Two throw-away sets of six hosts (one balancer, two API instances, three stream servers), from the
   lab image, addressed .61-.66 and .71-.76 in lab_subnet so the lab is left alone: all on this
   machine's Incus, and the same with backend-api-2 and stream-server-2 on the second host. Each set
   set up once, then NOOP_RUNS no-op `inv site.setup` runs of each, alternated so both meet the same
   load: medians and their ratio.

Run as root with the project's venv after `inv lab.up`:  .venv/bin/python scripts/bench_remote.py
The throw-away containers are always deleted at the end; the lab's known_hosts is put back.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_site import INV, KNOWN_HOSTS, REPO, bench_inventory, run, site_run

sys.path.insert(0, str(REPO))

from fabfile.incus_api import LocalAPI, local_socket  # noqa: E402
from fabfile.incus_remote import remote_api  # noqa: E402
from fabfile.inventory import load_inventory  # noqa: E402

NOOP_RUNS = 5
EXEC_LOOP = 500
CLI_RUNS = 30
HANG_S = 2.0
TARGET_RATIO = 1.2
LAYOUT = {"haproxy": ["haproxy"], "backend_api_instances": ["backend-api-1", "backend-api-2"],
          "stream_server_instances": ["stream-server-1", "stream-server-2", "stream-server-3"]}
REMOTE_HOSTS = ("backend-api-2", "stream-server-2")


def timed(call, count: int) -> list:
    times = []
    for number in range(count):
        started = time.monotonic()
        code, stdout = call(number)
        if (code, stdout) != (3, f"n{number}\n"):
            sys.exit(f"command {number} answered exit {code}, stdout {stdout!r}")
        times.append(time.monotonic() - started)
    return times


def figures(times: list) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered) * 1000:6.1f} ms  p95 {ordered[int(len(ordered) * 0.95)] * 1000:6.1f} ms"
            f"  max {ordered[-1] * 1000:6.1f} ms  (n={len(ordered)})")


def exec_figures() -> None:
    hosts = load_inventory(str(REPO / "hosts.yaml")).hosts.values()
    local = next(h for h in hosts if h.connection == "incus" and h.vars.get("incus_remote", "local") == "local")
    remote = next((h for h in hosts if h.connection == "incus" and h.vars.get("incus_remote", "local") != "local"), None)
    if remote is None:
        sys.exit("hosts.yaml places no instance on a second Incus host (incus_remote); nothing to compare")
    command = "echo n{0}; exit 3".format
    api = LocalAPI(local_socket())
    local_times = timed(lambda n: (lambda r: (r.exited, r.stdout))(api.exec(local.vars.get("incus_name", local.name), command(n))), 100)
    ref = f"{remote.vars['incus_remote']}:{remote.vars.get('incus_name', remote.name)}"

    def cli(number):
        done = subprocess.run(["incus", "exec", "--", ref, "sh", "-c", command(number)], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout

    cli_times = timed(cli, CLI_RUNS)
    remote_api_ = remote_api(remote.vars["incus_remote"])
    api_times = timed(lambda n: (lambda r: (r.exited, r.stdout))(remote_api_.exec(remote.vars.get("incus_name", remote.name), command(n))),
                      EXEC_LOOP)
    print(f"one command (echo; exit 3), {local.name} local, {remote.name} on {remote.vars['incus_remote']}:")
    print(f"  local API (unix socket)        {figures(local_times)}")
    print(f"  remote, incus CLI              {figures(cli_times)}")
    print(f"  remote API (HTTPS, kept conn.) {figures(api_times)}; over {HANG_S:g} s: "
          f"{sum(t > HANG_S for t in api_times)}", flush=True)


def site_figures() -> int:
    saved_known_hosts = KNOWN_HOSTS.read_bytes() if KNOWN_HOSTS.exists() else None
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        workdir = Path(tmp)
        local_inventory, local_refs = bench_inventory(workdir, LAYOUT, "bl-", 61)
        mixed_inventory, mixed_refs = bench_inventory(workdir, LAYOUT, "bm-", 71, REMOTE_HOSTS)
        runs = {"all local": [], "a third remote": []}
        try:
            for inventory, refs in ((local_inventory, local_refs), (mixed_inventory, mixed_refs)):
                print(f"lab.up + site.setup: {', '.join(refs)}", flush=True)
                run([INV, "lab.up", "--inventory", str(inventory)])
                site_run(inventory, workdir / "report.json", False)
            print(f"site.setup no-op, {NOOP_RUNS} runs each, alternated", flush=True)
            for _ in range(NOOP_RUNS):
                runs["all local"].append(site_run(local_inventory, workdir / "report.json", True))
                runs["a third remote"].append(site_run(mixed_inventory, workdir / "report.json", True))
        finally:
            for ref in local_refs + mixed_refs:
                subprocess.run(["incus", "delete", "--force", "--", ref], capture_output=True, timeout=120)
            if saved_known_hosts is not None:
                KNOWN_HOSTS.write_bytes(saved_known_hosts)
    local, mixed = (statistics.median(runs[k]) for k in ("all local", "a third remote"))
    print(f"\n{'inv site.setup, no-op, 6 hosts':<34} {'median s':>9}  runs")
    for label, values in runs.items():
        print(f"{label:<34} {statistics.median(values):9.2f}  {[round(v, 2) for v in values]}")
    ratio = mixed / local
    print(f"ratio a third remote / all local: {ratio:.2f}x (target <= {TARGET_RATIO}x: "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    return 0


def main() -> int:
    exec_figures()
    return site_figures()


if __name__ == "__main__":
    sys.exit(main())
