#!/usr/bin/env python3
"""Re-record every ``<case>.expected.json`` from ``ansible-inventory --list`` (see README.md).

Usage: ANSIBLE_INVENTORY=/tmp/ansible-venv/bin/ansible-inventory python3 tests/inventories/record.py [CASE...]
A ``<case>.yaml`` is read with Ansible's YAML inventory plugin only; a ``<case>/`` folder is an
Ansible-shaped repo read with the yaml and ini plugins (see ``case_arguments``). A file Ansible
cannot parse is an error, so a case Ansible rejects is recorded as {"ansible_error": "<first line>"}
instead of an empty inventory.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVIRONMENT = {
    "ANSIBLE_INVENTORY_ENABLED": "yaml",
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_DEPRECATION_WARNINGS": "false",
}
TIMEOUT = 30  # seconds; Ansible expands any host range, so a huge one never finishes


# A folder case (an Ansible-shaped repo) reads INI too, and any file that fails to parse is an error.
REPO_ENVIRONMENT = {**ENVIRONMENT, "ANSIBLE_INVENTORY_ENABLED": "yaml,ini", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"}


def case_arguments(case: Path) -> list:
    """ansible-inventory's arguments for a case: the file, or a folder case's sources.txt (one -i per line)
    and its vault-password.txt / vault-ids.txt (one --vault-id label@file per line)."""
    if not case.is_dir():
        return ["-i", str(case)]
    arguments = []
    for line in (case / "sources.txt").read_text().splitlines():
        if line.strip():
            # Ansible's own -i a,b is a list of host names; ours (like ansible.cfg's inventory = a,b) is two sources.
            for part in line.strip().split(","):
                arguments += ["-i", str(case / part)]
    if (case / "vault-password.txt").exists():
        arguments += ["--vault-password-file", str(case / "vault-password.txt")]
    if (case / "vault-ids.txt").exists():
        for line in (case / "vault-ids.txt").read_text().splitlines():
            label, _, source = line.strip().partition("@")
            arguments += ["--vault-id", f"{label}@{case / source}"]
    return arguments


def ansible_list(inventory: Path, executable: str) -> dict:
    """``ansible-inventory --list`` of one case, or {"ansible_error": first error line}."""
    environment = REPO_ENVIRONMENT if inventory.is_dir() else ENVIRONMENT
    try:
        done = subprocess.run([executable, *case_arguments(inventory), "--list"], capture_output=True, text=True,
                              env={**os.environ, **environment}, timeout=TIMEOUT, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"ansible_error": f"no answer within {TIMEOUT} s"}
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        reasons = [line for line in lines if "with 'yaml' plugin:" in line or "with 'ini' plugin:" in line]
        return {"ansible_error": (reasons[-1:] or [line for line in lines if "ERROR" in line] or lines or ["?"])[0].strip()}
    return json.loads(done.stdout)


def main(names) -> None:
    executable = os.environ.get("ANSIBLE_INVENTORY", "ansible-inventory")
    every = sorted([*HERE.glob("*.yaml"), *(path for path in HERE.iterdir() if path.is_dir())])
    cases = [case for case in every if case.stem in names] if names else every
    for case in cases:
        result = ansible_list(case, executable)
        (HERE / f"{case.stem}.expected.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"{case.stem}: {'error' if 'ansible_error' in result else 'ok'}")


if __name__ == "__main__":
    main(sys.argv[1:])
