"""The layering the design promises: modules that build commands never import a transport, and
`inv --list` imports neither Fabric nor Paramiko nor Jinja2."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

FABFILE = REPO / "fabfile"
# Modules that only decide what to run (commands as data) or hold facts.
COMMAND_MODULES = [
    "shell", "operations", "values", "services", "templating", "haproxy_runtime", "incus",
    "roles/base", "roles/common", "roles/haproxy", "roles/haproxy_vars", "roles/binary_service",
    "deploy/commands", "deploy/artifact", "failover/stoppers", "canary/plan", "canary/analysis", "canary/state",
]
FORBIDDEN = {"fabfile.transports", "fabfile.ssh_connection", "fabric", "paramiko"}


def imports_of(module: str) -> set:
    """Every module ``fabfile/<module>.py`` imports, anywhere in the file, as absolute names."""
    path = FABFILE / f"{module}.py"
    package = ["fabfile", *module.split("/")[:-1]]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def closure(module: str) -> set:
    """Imports of ``module`` and, transitively, of the project modules it imports."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            if name in seen:
                continue
            seen.add(name)
            relative = name.removeprefix("fabfile.").replace(".", "/")
            if name.startswith("fabfile.") and (FABFILE / f"{relative}.py").exists():
                todo.append(relative)
    return seen


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_modules_never_import_a_transport(module):
    reached = {name for name in closure(module) if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not reached, f"fabfile/{module}.py reaches {sorted(reached)}"


def test_the_task_list_loads_no_heavy_library():
    code = ("import sys, fabfile; heavy = [m for m in ('fabric', 'paramiko', 'jinja2', 'cryptography') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_walker_follows_relative_imports():
    """The closure walker itself follows relative imports (so the tests above can fail)."""
    assert "fabfile.transports" in closure("runner")
