#!/usr/bin/env python3
"""`inv inventory.show` against `ansible-inventory --list` on a large Ansible-shaped repo (README figures).

The repo, generated in a temporary folder (default 2,000 hosts in 50 groups):
    inventory/hosts.yml          groups g00..g49 (10 parents p0..p9 above them), 40 hosts each, host vars
    inventory/extra.ini          an INI source: every host again in a role group, [role:vars]
    inventory/group_vars/all/    main.yml (a templated variable) + vault.yml (a vault-encrypted file)
    inventory/group_vars/gNN/    10-main.yml (templated, an inline !vault value) + 20-more.yml
    inventory/host_vars/HOST.yml for every 10th host
The vault texts are the ones ansible-vault wrote for tests/inventories/vault_repo (password files
beside them), so both tools decrypt real Ansible vaults. Each tool runs ROUNDS times, taking turns
(wall clock, a fresh process each time); the figure is the median.

Usage: make bench-inventory ANSIBLE_VENV=DIR [ARGS="--rounds 7"], or
       .venv/bin/python scripts/bench_inventory.py [--hosts 2000] [--groups 50] [--rounds 5]
ansible-inventory comes from $ANSIBLE_INVENTORY (make: ANSIBLE_VENV=DIR, a venv with ansible-core 2.19.14)
or PATH; without it only our figures print.
Both tools are checked to list the same hosts before any figure is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VAULT_CASE = REPO / "tests" / "inventories" / "vault_repo"
INV = str(REPO / ".venv" / "bin" / "inv")


def inline_vault_block() -> str:
    """The inline `stream_key: !vault |` block (label prod) from the vault_repo case."""
    lines = (VAULT_CASE / "inventory" / "group_vars" / "all.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stream_key: !vault"))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        block.append(line)
    return "\n".join(block) + "\n"


def build_repo(root: Path, hosts: int, groups: int) -> Path:
    inventory = root / "inventory"
    per_group = max(1, hosts // groups)
    tree: dict = {"all": {"vars": {"domain": "example.com"}, "children": {}}}
    parents = tree["all"]["children"]
    ini = ["[web]", "[db]"]
    web, db = [], []
    for g in range(groups):
        parent = parents.setdefault(f"p{g % 10}", {"vars": {"parent_var": f"p{g % 10}"}, "children": {}})
        members = {f"h{g:02d}-{i:03d}": {"rack": i % 8, "serial_no": f"SN{g:02d}{i:03d}"} for i in range(per_group)}
        parent["children"][f"g{g:02d}"] = {"vars": {"group_var": f"g{g:02d}", "ntp_server": "10.0.0.1"}, "hosts": members}
        for name in members:
            (web if len(web) <= len(db) else db).append(name)
    import yaml

    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "host_vars").mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump(tree, sort_keys=False))
    (inventory / "extra.ini").write_text("\n".join(
        ["[web]", *web, "[web:vars]", "http_port=8080", "[db]", *db, "[db:vars]", "db_port=5432"]) + "\n")
    (inventory / "group_vars" / "all" / "main.yml").write_text(
        'ntp_server: pool.ntp.org\nansible_host: "{{ inventory_hostname }}.{{ domain }}"\n')
    shutil.copy(VAULT_CASE / "inventory" / "group_vars" / "backend_api" / "vault.yml",
                inventory / "group_vars" / "all" / "vault.yml")
    inline = inline_vault_block()
    for g in range(groups):
        folder = inventory / "group_vars" / f"g{g:02d}"
        folder.mkdir()
        (folder / "10-main.yml").write_text(
            f'db_url: "postgres://app:{{{{ vault_db_password }}}}@db{g}.{{{{ domain }}}}/app"\n{inline}')
        (folder / "20-more.yml").write_text(f"tier: tier{g % 3}\nlimits: {{cpu: {g}, memory: 512}}\n")
    for index, name in enumerate(sorted(web + db)):
        if index % 10 == 0:
            (inventory / "host_vars" / f"{name}.yml").write_text(f"host_note: note for {name}\n")
    return inventory


def vault_arguments() -> list:
    return ["--vault-password-file", str(VAULT_CASE / "vault-password.txt"),
            "--vault-id", f"prod@{VAULT_CASE / 'prod-password.txt'}"]


def timed_once(argv: list, env: dict) -> tuple:
    """(wall seconds, CPU seconds (user + system), stdout) of one run; any failure stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} ... exited {done.returncode}: {done.stderr.strip()[-500:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, done.stdout


def alternated(commands: dict, rounds: int, env: dict) -> dict:
    """Each command ROUNDS times, taking turns, so a busy machine weighs on all of them alike:
    {name: (median wall, [wall...], median CPU, last stdout)}. CPU time is the figure a busy
    machine (other work on its cores) disturbs least."""
    runs: dict = {name: [] for name in commands}
    cpus: dict = {name: [] for name in commands}
    outputs: dict = {}
    for argv in commands.values():
        timed_once(argv, env)  # not counted: writes the bytecode, warms the page cache
    for _ in range(rounds):
        for name, argv in commands.items():
            seconds, cpu, outputs[name] = timed_once(argv, env)
            runs[name].append(seconds)
            cpus[name].append(cpu)
    return {name: (statistics.median(runs[name]), runs[name], statistics.median(cpus[name]), outputs[name])
            for name in commands}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ansible = os.environ.get("ANSIBLE_INVENTORY") or shutil.which("ansible-inventory")
    if ansible and not os.access(ansible, os.X_OK):
        sys.exit(f"{ansible}: no ansible-inventory there; install ansible-core 2.19.14 into that venv (see the Makefile)")
    # Python as users run it: with bytecode (this workplace sets PYTHONDONTWRITEBYTECODE; a first run writes it).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "ANSIBLE_VAULT_PASSWORD_FILE": "", "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true", "ANSIBLE_DEPRECATION_WARNINGS": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as workdir:
        inventory = build_repo(Path(workdir), args.hosts, args.groups)
        files = sum(1 for _ in inventory.rglob("*") if _.is_file())
        print(f"repo: {args.hosts} hosts, {args.groups} groups (+10 parents, 2 INI groups), {files} files, "
              f"a vault file + {args.groups} inline !vault values, templated variables; median of {args.rounds}")
        commands = {"ours": [INV, "inventory.show", "-i", str(inventory), *vault_arguments()]}
        if ansible:
            commands["ansible"] = [ansible, "-i", str(inventory), "--list", *vault_arguments()]
        results = alternated(commands, args.rounds, env)
        ours, our_runs, our_cpu, summary = results["ours"]
        listed = len(summary.splitlines()) - 1
        print(f"inv inventory.show           {ours:6.2f} s wall, {our_cpu:5.2f} s CPU  (runs: "
              f"{', '.join(f'{r:.2f}' for r in our_runs)}; {listed} hosts listed)")
        in_process = []
        sys.path.insert(0, str(REPO))
        from fabfile.inventory import load_inventory
        from fabfile.inventory.vault import Vault

        for _ in range(args.rounds):
            vault = Vault.from_options(vault_ids=[f"prod@{VAULT_CASE / 'prod-password.txt'}"],
                                       password_files=[str(VAULT_CASE / "vault-password.txt")], environ={})
            start = time.perf_counter()
            loaded = load_inventory(str(inventory), vault=vault)
            in_process.append(time.perf_counter() - start)
        problems = sum(1 for host in loaded.hosts.values() if host.problem)
        print(f"  of which load_inventory    {statistics.median(in_process):6.2f} s  (in process; "
              f"{problems} hosts with a problem)")
        if not ansible:
            print("ansible-inventory not found (PATH or $ANSIBLE_INVENTORY): no comparison")
            return
        theirs, their_runs, their_cpu, listing = results["ansible"]
        their_hosts = set(json.loads(listing)["_meta"]["hostvars"])
        if their_hosts != set(loaded.hosts):
            sys.exit(f"the two tools list different hosts ({len(their_hosts)} vs {len(loaded.hosts)})")
        print(f"ansible-inventory --list     {theirs:6.2f} s wall, {their_cpu:5.2f} s CPU  (runs: "
              f"{', '.join(f'{r:.2f}' for r in their_runs)})")
        print(f"ratio inv / ansible-inventory: {ours / theirs:.2f}x wall, {our_cpu / their_cpu:.2f}x CPU "
              "(target: at most 0.2x)")
        print(f"load average during the runs: {os.getloadavg()[0]:.1f} (2 cores here; busy machines stretch both)")


if __name__ == "__main__":
    main()
