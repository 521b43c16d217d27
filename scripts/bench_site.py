#!/usr/bin/env python3
"""`inv site.setup` on fresh containers and its no-op re-run, beside the three calls it replaces.

Five throw-away containers (one balancer, two API instances, two stream servers) from the lab
image, named after the lab's own prefix plus ``site-`` and addressed .81-.85 in lab_subnet, so the
lab is left alone. Timed, in order:
    site.setup on the fresh containers (common + haproxy + api + stream, one parallel play)
    site.setup no-op re-runs (NOOP_RUNS; each must change nothing)
    haproxy.setup + api.setup + stream.setup no-op re-runs (the three calls site.setup replaces)
Ansible's figures for the same work (a site.yml with the same roles, measured on this lab for
issue 15) are printed beside ours; scripts/bench_ansible.py re-measures the haproxy part.

Run as root with the project's venv after `inv lab.up`:  .venv/bin/python scripts/bench_site.py
The containers are always deleted at the end; the lab's known_hosts is put back.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
INV = str(Path(sys.executable).parent / "inv")  # the inv of the venv running this script
KNOWN_HOSTS = REPO / ".lab" / "ssh" / "known_hosts"
NOOP_RUNS = 3
# Measured on the lab for issue 15 with ansible-core 2.19 (community.general.incus connection).
ANSIBLE_SITE = {"fresh": 37.0, "noop": 17.8}
TARGETS = {"fresh": 11.0, "noop": 0.7}
LAYOUT = {"haproxy": ["haproxy"], "backend_api_instances": ["backend-api-1", "backend-api-2"],
          "stream_server_instances": ["stream-server-1", "stream-server-2"]}


def run(argv, timeout=900) -> tuple:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return time.monotonic() - started, done.stdout


def bench_inventory(workdir: Path, layout=LAYOUT, tag: str = "site-", octet: int = 81, remote_hosts=()) -> tuple:
    """The lab's vars with throw-away hosts (``layout``: group -> hosts, named after the lab's prefix plus
    ``tag``, addressed from ``octet`` in lab_subnet); ``remote_hosts`` go on the lab's second Incus host.
    (path, incus references: NAME or REMOTE:NAME)."""
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    lab_hosts = [h for g in data["all"]["children"].values() for h in (g.get("hosts") or {}).items()]
    first_name, first = lab_hosts[0]
    incus_name = str((first or {}).get("incus_name", first_name))
    prefix = incus_name[: -len(first_name)] if incus_name.endswith(first_name) else ""
    remote = (data["all"]["vars"].get("lab_incus_hosts") or [{}])[0].get("name") if remote_hosts else None
    subnet = ipaddress.ip_network(data["all"]["vars"]["lab_subnet"])
    refs, children = [], {}
    for group, hosts in layout.items():
        children[group] = {"hosts": {}}
        for host in hosts:
            name = f"{prefix}{tag}{host}"
            entry = {"incus_name": name, "address": str(subnet.network_address + octet)}
            if host in remote_hosts:
                entry["incus_remote"] = remote
            refs.append(f"{remote}:{name}" if host in remote_hosts else name)
            children[group]["hosts"][host] = entry
            octet += 1
    data["all"]["children"] = children
    path = workdir / f"{tag}hosts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, refs


def site_run(inventory: Path, report: Path, expect_noop: bool) -> float:
    seconds, out = run([INV, "site.setup", "--inventory", str(inventory), "--report", str(report)])
    changed = sum(counts["changed"] for counts in json.loads(report.read_text())["recap"].values())
    if expect_noop and changed:
        sys.exit(f"site.setup re-run changed {changed} step(s); not a no-op:\n{out}")
    return seconds


def three_calls(inventory: Path) -> float:
    return sum(run([INV, task, "--inventory", str(inventory)])[0] for task in ("haproxy.setup", "api.setup", "stream.setup"))


def main() -> int:
    saved_known_hosts = KNOWN_HOSTS.read_bytes() if KNOWN_HOSTS.exists() else None
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        workdir = Path(tmp)
        inventory, names = bench_inventory(workdir)
        try:
            print(f"lab.up: {', '.join(names)}", flush=True)
            run([INV, "lab.up", "--inventory", str(inventory)])
            report = workdir / "report.json"
            print("site.setup: fresh, then no-op re-runs", flush=True)
            fresh = site_run(inventory, report, False)
            noop = [site_run(inventory, report, True) for _ in range(NOOP_RUNS)]
            print("haproxy.setup + api.setup + stream.setup: no-op re-runs", flush=True)
            calls = [three_calls(inventory) for _ in range(NOOP_RUNS)]
        finally:
            for name in names:
                subprocess.run(["incus", "delete", "--force", "--", name], capture_output=True, timeout=120)
            if saved_known_hosts is not None:
                KNOWN_HOSTS.write_bytes(saved_known_hosts)
    print(f"\n{'what (5 hosts)':<44} {'fresh s':>8} {'no-op median s':>15} {'vs Ansible':>11}")
    print(f"{'inv site.setup':<44} {fresh:8.2f} {statistics.median(noop):15.2f} "
          f"{fresh / ANSIBLE_SITE['fresh']:5.2f}x/{statistics.median(noop) / ANSIBLE_SITE['noop']:.2f}x")
    print(f"{'inv haproxy.setup + api.setup + stream.setup':<44} {'-':>8} {statistics.median(calls):15.2f}")
    print(f"{'ansible-playbook site.yml (issue 15 figures)':<44} {ANSIBLE_SITE['fresh']:8.2f} {ANSIBLE_SITE['noop']:15.2f}")
    print(f"targets: fresh <= {TARGETS['fresh']} s, no-op <= {TARGETS['noop']} s; "
          f"raw no-op {[round(x, 2) for x in noop]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
