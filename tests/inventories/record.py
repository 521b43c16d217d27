#!/usr/bin/env python3
"""Re-record every ``<case>.expected.json`` from ``ansible-inventory --list`` (see README.md).

Usage: ANSIBLE_INVENTORY=/tmp/ansible-venv/bin/ansible-inventory python3 tests/inventories/record.py [CASE...]
Only Ansible's YAML inventory plugin is enabled and a file it cannot parse is an error, so a
case Ansible rejects is recorded as {"ansible_error": "<first line>"} instead of an empty inventory.
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


def ansible_list(inventory: Path, executable: str) -> dict:
    """``ansible-inventory --list`` of one file, or {"ansible_error": first error line}."""
    try:
        done = subprocess.run([executable, "-i", str(inventory), "--list"], capture_output=True, text=True,
                              env={**os.environ, **ENVIRONMENT}, timeout=TIMEOUT, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"ansible_error": f"no answer within {TIMEOUT} s"}
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        reasons = [line for line in lines if "with 'yaml' plugin:" in line] or [line for line in lines if "ERROR" in line]
        return {"ansible_error": (reasons or lines or ["?"])[0].strip()}
    return json.loads(done.stdout)


def main(names) -> None:
    executable = os.environ.get("ANSIBLE_INVENTORY", "ansible-inventory")
    cases = [HERE / f"{name}.yaml" for name in names] or sorted(HERE.glob("*.yaml"))
    for case in cases:
        result = ansible_list(case, executable)
        case.with_suffix(".expected.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"{case.stem}: {'error' if 'ansible_error' in result else 'ok'}")


if __name__ == "__main__":
    main(sys.argv[1:])
