#!/usr/bin/env python3
"""Deploy benchmark on the local lab (figures for the README; not a timed test).

`inv api.deploy` of a ~16 MB binary to both api instances, with every gate on: once with the
default soak (`deploy_soak_seconds` 5) and once with the soak off. Per instance: stage (time it
waited for its upload + sha256 check, done while it still served, usually while the instance
before it soaked), drain, install (rename into place), restart, identity (the main process runs
the pushed bytes), health, soak, haproxy (the wait for UP after the soak; 0 when HAProxy already
said UP inside the soak), and the tool's own overhead (everything but the waits). Then what the
soak-free part leaves for the soak under issue 9's 7 s target: the instances of a two-instance
pool soak one after the other (never one out while the other soaks), so two soaks add up.
`haproxy.setup` against Ansible is scripts/bench_ansible.py.

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
INV = str(Path(sys.executable).parent / "inv")  # the inv of the venv running this script
PHASES = ("stage", "drain", "install", "restart", "identity", "health", "soak", "haproxy")
WAITS = ("stage", "identity", "health", "soak", "haproxy")
TARGET = 7.0  # issue 9: a two-instance deploy with every gate on


def inv(*args) -> float:
    """Run an inv task; return its wall time. Stops the bench with the task's output when it fails
    (also used by bench_scale.py)."""
    started = time.monotonic()
    done = subprocess.run([INV, *args], cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"inv {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return seconds


def build(version: str, out: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-demo-api"), "--version", version, "-o", str(out),
                    "--pad-mb", "16"], check=True, timeout=300, stdout=subprocess.DEVNULL)
    return out


def bench_deploy() -> list:
    """(soak setting, wall seconds of the whole deploy, per-instance rows) for soak 5 s and soak off."""
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        stamp = str(int(time.time()))
        runs = []
        for soak, version in (("5", f"bench-{stamp}-a"), ("0", f"bench-{stamp}-b")):
            binary = build(version, work / f"veza-api-{version}")
            report = work / f"{version}.json"
            wall = inv("api.deploy", "--binary", str(binary), "--report", str(report),
                       "--set", f"deploy_soak_seconds={soak}")
            rows = []
            for instance in json.loads(report.read_text())["instances"]:
                phases = instance["phases"]
                waiting = sum(phases.get(name, 0) for name in WAITS)
                rows.append({"instance": instance["name"], "instance_s": instance["seconds"], **phases,
                             "overhead_s": round(instance["seconds"] - waiting, 3)})
            runs.append((soak, wall, rows))
        return runs


def main():
    print(f"{'soak':>4} {'wall':>6} {'instance':<15} {'total':>6} " + " ".join(f"{p:>8}" for p in PHASES)
          + f" {'overhead':>8}")
    walls = {}
    for soak, wall, rows in bench_deploy():
        walls[soak] = wall
        for row in rows:
            print(f"{soak:>4} {wall:6.2f} {row['instance']:<15} {row['instance_s']:6.2f} "
                  + " ".join(f"{row.get(p, 0):8.2f}" for p in PHASES) + f" {row['overhead_s']:8.2f}")
    soak_free = walls["0"]
    print(f"soak 5: {walls['5']:.2f}s; without the soak {soak_free:.2f}s; two soaks one after the other: "
          f"{TARGET:g}s leaves at most {max(TARGET - soak_free, 0) / 2:.2f}s of soak per instance "
          f"(the default 5 s needs >= {soak_free + 10:.2f}s)")


if __name__ == "__main__":
    main()
