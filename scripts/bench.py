#!/usr/bin/env python3
"""Deploy benchmark on the local lab (figures for the README; not a timed test).

`inv api.deploy` of a 20 MB binary, twice: per instance, push / restart / health gate /
HAProxy gate, and the tool's own overhead (everything but waiting for the service and
for HAProxy's checks). `haproxy.setup` against Ansible is scripts/bench_ansible.py.

Run as root after `inv lab.up` (`make bench` runs both). The lab is left with the
20 MB bench build deployed on the API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
INV = str(REPO / ".venv" / "bin" / "inv")


def inv(*args) -> float:
    """Run an inv task; return its wall time. Fails loudly with the task's output."""
    started = time.monotonic()
    done = subprocess.run([INV, *args], cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"inv {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds


def build(version: str, out: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-demo-api"), "--version", version, "-o", str(out),
                    "--pad-mb", "16"], check=True, timeout=300, stdout=subprocess.DEVNULL)
    return out


def bench_deploy() -> list:
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        stamp = str(int(time.time()))
        rows = []
        for version in (f"bench-{stamp}-a", f"bench-{stamp}-b"):
            binary = build(version, work / f"veza-api-{version}")
            report = work / f"{version}.json"
            wall = inv("api.deploy", "--binary", str(binary), "--report", str(report))
            for instance in json.loads(report.read_text())["instances"]:
                phases = instance["phases"]
                waiting = phases.get("health", 0) + phases.get("haproxy", 0)
                rows.append({"deploy": version[-1], "instance": instance["name"], "wall_s": round(wall, 2),
                             "instance_s": instance["seconds"], **phases,
                             "overhead_s": round(instance["seconds"] - waiting, 3)})
        return rows


def main():
    print(f"{'deploy':<6} {'instance':<15} {'total':>6} {'drain':>6} {'push':>6} {'restart':>7} {'health':>6} "
          f"{'haproxy':>7} {'overhead':>8}")
    for row in bench_deploy():
        print(f"{row['deploy']:<6} {row['instance']:<15} {row['instance_s']:6.2f} {row.get('drain', 0):6.2f} "
              f"{row.get('push', 0):6.2f} {row.get('restart', 0):7.2f} {row.get('health', 0):6.2f} "
              f"{row.get('haproxy', 0):7.2f} {row['overhead_s']:8.2f}")


if __name__ == "__main__":
    main()
