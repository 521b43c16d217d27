#!/usr/bin/env python3
"""`inv haproxy.setup` against the same work done by Ansible, in one run (figures for the README).

Two throw-away lab containers from the same image, so both tools start from the same state:
    bench-ansible (.91)  ansible-playbook with a minimal equivalent playbook
    bench-inv     (.92)  inv haproxy.setup
Each tool is timed on its fresh container, then on 3 no-op re-runs (which must change nothing).
Ansible runs with its defaults (pipelining off); a third row times its no-op re-runs again
with pipelining on, which the incus connection supports.

The work, on both sides: apt lists refreshed when older than a day; packages ca-certificates,
curl, socat, haproxy; timezone Etc/UTC (/etc/localtime link + /etc/timezone); our haproxy.cfg
(rendered here once from the lab inventory, so both tools write identical bytes) validated
with `haproxy -c` before it replaces the live file; haproxy enabled and started; a reload
handler that runs only on change. Ansible runs with `gather_facts: false` (our tool gathers
nothing beyond its per-step probes) and an explicit ansible_python_interpreter (no discovery).

Ansible is installed from PyPI into its own venv (.lab/ansible-venv) at the versions pinned
in ANSIBLE_PINS; its bundled community.general provides the `community.general.incus`
connection, which talks `incus exec` like our incus transport.

Run as root with the project's venv after `inv lab.up`:
    .venv/bin/python scripts/bench_ansible.py
Only the two throw-away containers are created and they are always deleted at the end; the
lab's own containers are left alone (`lab.up` gets an inventory of the throw-away hosts only,
and the lab's ssh known_hosts, which `lab.up` rewrites from its inventory, is put back).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fabfile.inventory import load_inventory  # noqa: E402
from fabfile.roles.haproxy_vars import template_vars, validate_vars  # noqa: E402
from fabfile.templating import render  # noqa: E402

INV = str(REPO / ".venv" / "bin" / "inv")
ANSIBLE_VENV = REPO / ".lab" / "ansible-venv"
ANSIBLE_PLAYBOOK = str(ANSIBLE_VENV / "bin" / "ansible-playbook")
# ansible 12.x is the newest line whose ansible-core (2.19) still runs on Python 3.11.
ANSIBLE_PINS = ("ansible==12.3.0", "ansible-core==2.19.14")
KNOWN_HOSTS = REPO / ".lab" / "ssh" / "known_hosts"

ANSIBLE_HOST = "bench-ansible"
INV_HOST = "bench-inv"
HOST_OCTETS = {ANSIBLE_HOST: 91, INV_HOST: 92}
NOOP_RUNS = 3

PIP_TIMEOUT = 900
LAB_UP_TIMEOUT = 900
RUN_TIMEOUT = 900  # one setup run, either tool

PLAYBOOK = """\
# Same work as `inv haproxy.setup` (roles common + haproxy), for the benchmark.
- name: haproxy setup
  hosts: haproxy
  gather_facts: false
  tasks:
    - name: apt lists fresh (max age 1 day)
      ansible.builtin.apt:
        update_cache: true
        cache_valid_time: 86400

    - name: base packages
      ansible.builtin.apt:
        name: [ca-certificates, curl, socat]
        state: present

    - name: timezone Etc/UTC (/etc/localtime)
      ansible.builtin.file:
        src: /usr/share/zoneinfo/Etc/UTC
        dest: /etc/localtime
        state: link
        force: true

    - name: timezone Etc/UTC (/etc/timezone)
      ansible.builtin.copy:
        content: "Etc/UTC\\n"
        dest: /etc/timezone
        mode: "0644"

    - name: package haproxy
      ansible.builtin.apt:
        name: haproxy
        state: present

    - name: /etc/haproxy/haproxy.cfg
      ansible.builtin.copy:
        src: "{{ playbook_dir }}/haproxy.cfg"
        dest: /etc/haproxy/haproxy.cfg
        mode: "0644"
        validate: haproxy -c -q -f %s
        backup: true
      notify: reload haproxy

    - name: service haproxy enabled and running
      ansible.builtin.service:
        name: haproxy
        enabled: true
        state: started

  handlers:
    - name: reload haproxy
      ansible.builtin.service:
        name: haproxy
        state: reloaded
"""

RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


# ---------------------------------------------------------------- helpers


def run(argv: list, *, timeout: float, env: dict | None = None) -> tuple[float, str]:
    """Run a command from the repo root; return (wall seconds, stdout). Exit with its output if it fails."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        sys.exit(f"{' '.join(argv[:3])}... did not finish within {timeout}s")
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def delete_container(name: str) -> None:
    """Remove a throw-away container (absent is fine)."""
    subprocess.run(["incus", "delete", "--force", name], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- ansible install


def ansible_versions() -> str | None:
    """`ansible-playbook --version`'s first line from our venv, or None when it is not installed."""
    if not Path(ANSIBLE_PLAYBOOK).exists():
        return None
    done = subprocess.run([ANSIBLE_PLAYBOOK, "--version"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else None


def installed_pins() -> list:
    """Which of ANSIBLE_PINS the venv actually holds (name==version as pip reports it)."""
    done = subprocess.run([str(ANSIBLE_VENV / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    have = {p["name"].lower(): p["version"] for p in json.loads(done.stdout or "[]")}
    return [pin for pin in ANSIBLE_PINS if have.get(pin.split("==")[0]) == pin.split("==")[1]]


def ensure_ansible() -> None:
    """Install the pinned Ansible into .lab/ansible-venv unless it is already there; stop if pip says no."""
    if ansible_versions() and len(installed_pins()) == len(ANSIBLE_PINS):
        return
    print(f"installing {' '.join(ANSIBLE_PINS)} into {ANSIBLE_VENV.relative_to(REPO)} ...", flush=True)
    if not (ANSIBLE_VENV / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], timeout=120)
    try:
        done = subprocess.run([str(ANSIBLE_VENV / "bin" / "python"), "-m", "pip", "install", "-q", *ANSIBLE_PINS],
                              capture_output=True, text=True, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        sys.exit(f"pip install {' '.join(ANSIBLE_PINS)} gave no answer within {PIP_TIMEOUT}s; try again later")
    if done.returncode != 0 or not ansible_versions():
        # PIP_FIND_LINKS may add harmless "Location ... is ignored" warnings; show pip's errors only.
        errors = [line for line in done.stderr.splitlines() if "is ignored" not in line]
        sys.exit(f"cannot install {' '.join(ANSIBLE_PINS)} from PyPI (pip exit {done.returncode}):\n"
                 + "\n".join(errors[-20:]))


# ---------------------------------------------------------------- inventories and files


def lab_data() -> dict:
    return yaml.safe_load((REPO / "hosts.yaml").read_text())


def address_of(data: dict, host: str) -> str:
    """The throw-away host's address in the lab subnet (.91, .92)."""
    subnet = ipaddress.ip_network(data["all"]["vars"]["lab_subnet"])
    return str(subnet.network_address + HOST_OCTETS[host])


def lab_up_inventory(workdir: Path) -> Path:
    """The lab's vars with only the throw-away hosts, so `lab.up` creates them and touches nothing else."""
    data = lab_data()
    hosts = {name: {"address": address_of(data, name)} for name in HOST_OCTETS}
    data["all"]["children"] = {"haproxy": {"hosts": hosts}}
    path = workdir / "lab-up-hosts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def setup_inventory(workdir: Path, host: str) -> Path:
    """The lab inventory with its haproxy group replaced by one throw-away host (the upstreams stay)."""
    data = lab_data()
    data["all"]["children"]["haproxy"] = {"hosts": {host: {"address": address_of(data, host)}}}
    path = workdir / f"{host}-hosts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def render_config(inventory_path: Path, host: str) -> str:
    """Our haproxy.cfg for ``host``, exactly as `inv haproxy.setup` renders it."""
    inventory = load_inventory(str(inventory_path))
    variables = template_vars(inventory.hosts[host], inventory)
    problems = validate_vars(variables)
    if problems:
        sys.exit(f"haproxy vars for {host}: {problems[0]}")
    return render("haproxy/haproxy.cfg.j2", variables)


def write_ansible_project(workdir: Path, config: str) -> tuple[Path, Path]:
    """playbook.yml, haproxy.cfg, a YAML inventory (incus connection) and an empty ansible.cfg."""
    project = workdir / "ansible"
    project.mkdir()
    (project / "haproxy.cfg").write_text(config)
    (project / "playbook.yml").write_text(PLAYBOOK)
    (project / "ansible.cfg").write_text("[defaults]\n")  # Ansible's defaults, whatever /etc/ansible says
    inventory = {"all": {"children": {"haproxy": {"hosts": {ANSIBLE_HOST: {
        "ansible_connection": "community.general.incus",
        "ansible_host": ANSIBLE_HOST,
        "ansible_python_interpreter": "/usr/bin/python3",
    }}}}}}
    (project / "inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return project, project / "inventory.yaml"


# ---------------------------------------------------------------- timed runs


def ansible_env(project: Path, pipelining: bool = False) -> dict:
    """Ansible's defaults (pipelining off unless asked), with config, temp and retry files in the temp dir."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_PIPELINING": "true" if pipelining else "false",
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(project / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "1",
    })
    return env


def playbook_run(project: Path, inventory: Path, expect_noop: bool, pipelining: bool = False) -> float:
    """One timed ansible-playbook run; fail unless its recap says failed=0 (and changed=0 when a no-op)."""
    seconds, out = run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(project / "playbook.yml")],
                       timeout=RUN_TIMEOUT, env=ansible_env(project, pipelining))
    recap = {m["host"]: m for m in RECAP.finditer(out)}.get(ANSIBLE_HOST)
    if recap is None or int(recap["failed"]) or int(recap["unreachable"]):
        sys.exit(f"ansible-playbook: no clean recap for {ANSIBLE_HOST}:\n{out}")
    if expect_noop and int(recap["changed"]):
        sys.exit(f"ansible-playbook re-run changed {recap['changed']} task(s); not a no-op:\n{out}")
    return seconds


def inv_run(inventory: Path, report: Path, expect_noop: bool) -> float:
    """One timed `inv haproxy.setup`; fail unless its report says changed=0 when a no-op."""
    seconds, out = run([INV, "haproxy.setup", "--inventory", str(inventory), "--report", str(report)],
                       timeout=RUN_TIMEOUT)
    changed = json.loads(report.read_text())["recap"][INV_HOST]["changed"]
    if expect_noop and changed:
        sys.exit(f"inv haproxy.setup re-run changed {changed} step(s); not a no-op:\n{out}")
    return seconds


def timed_series(once) -> dict:
    """Fresh run, then NOOP_RUNS re-runs that must change nothing."""
    fresh = once(False)
    noop = [once(True) for _ in range(NOOP_RUNS)]
    return {"fresh": fresh, "noop": noop}


def live_config_digest(container: str) -> str:
    """sha256 of the live haproxy.cfg, plus whether haproxy is active, inside a throw-away container."""
    _, out = run(["incus", "exec", container, "--", "sh", "-c",
                  "sha256sum /etc/haproxy/haproxy.cfg | cut -c1-16; systemctl is-active haproxy"], timeout=30)
    return " ".join(out.split())


def print_table(results: dict) -> None:
    """tool, fresh s, no-op min / median s ('-' where a row has no fresh run)."""
    print(f"\n{'tool':<34} {'fresh s':>8} {'no-op min s':>12} {'no-op median s':>15}")
    for tool, series in results.items():
        fresh = "-" if series["fresh"] is None else f"{series['fresh']:.2f}"
        print(f"{tool:<34} {fresh:>8} {min(series['noop']):12.2f} {statistics.median(series['noop']):15.2f}")


# ---------------------------------------------------------------- main


def main() -> None:
    ensure_ansible()
    versions = ansible_versions()
    saved_known_hosts = KNOWN_HOSTS.read_bytes() if KNOWN_HOSTS.exists() else None
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ansible-") as tmp:
        workdir = Path(tmp)
        ansible_inventory_src = setup_inventory(workdir, ANSIBLE_HOST)
        inv_inventory = setup_inventory(workdir, INV_HOST)
        project, ansible_inventory = write_ansible_project(workdir, render_config(ansible_inventory_src, ANSIBLE_HOST))
        try:
            print(f"lab.up: {', '.join(HOST_OCTETS)}", flush=True)
            run([INV, "lab.up", "--inventory", str(lab_up_inventory(workdir))], timeout=LAB_UP_TIMEOUT)
            print("ansible-playbook: fresh + no-op re-runs", flush=True)
            results["ansible-playbook"] = timed_series(lambda noop: playbook_run(project, ansible_inventory, noop))
            # Pipelining (off by default in Ansible) saves the per-task module upload; no-op runs only.
            results["ansible-playbook (pipelining)"] = {
                "fresh": None, "noop": [playbook_run(project, ansible_inventory, True, True) for _ in range(NOOP_RUNS)]}
            print("inv haproxy.setup: fresh + no-op re-runs", flush=True)
            report = workdir / "inv-report.json"
            results["inv haproxy.setup"] = timed_series(lambda noop: inv_run(inv_inventory, report, noop))
            digests = {name: live_config_digest(name) for name in HOST_OCTETS}
        finally:
            for name in HOST_OCTETS:
                delete_container(name)
            if saved_known_hosts is not None:
                KNOWN_HOSTS.write_bytes(saved_known_hosts)
    print(f"ansible: {versions}; pins {', '.join(ANSIBLE_PINS)}")
    for name, digest in digests.items():
        print(f"{name}: haproxy.cfg sha256 {digest}")
    print_table(results)
    print(f"(no-op: {NOOP_RUNS} re-runs each, all with changed=0)")
    print("raw:", json.dumps({tool: {"fresh": s["fresh"] and round(s["fresh"], 2), "noop": [round(x, 2) for x in s["noop"]]}
                              for tool, s in results.items()}))


if __name__ == "__main__":
    main()
