"""What every host-touching task shares: its flags, loading the inventory, running a play.

Bad input (inventory, templates, flags) becomes one ``error:`` line and exit 2,
before any host is touched; a failed step makes the task exit 1 after the recap.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import yaml
from invoke.exceptions import Exit

from .inventory import InventoryError, load_inventory
from .operations import PreconditionFailed
from .runner import Masker, Output, plan_hosts, run_play, write_report
from .secrets_file import load_secrets
from .templating import TemplateError
from .transports import TransportError

REPO_ROOT = Path(__file__).resolve().parent.parent

COMMON_HELP = {
    "inventory": "inventory file in Ansible's YAML shape (default: invoke.yaml's veza.inventory, hosts.yaml)",
    "limit": "only these hosts or groups, comma-separated (NAME[,NAME])",
    "check": "probe only: say what would change, change nothing",
    "diff": "show unified diffs of rendered files against the hosts' current content",
    "report": "also write the results as JSON to this path",
    "set": "KEY=VALUE variable override, repeatable; beats every inventory value",
}


class UsageError(Exception):
    """A bad flag or argument; the message is the one line shown."""


def user_errors(task_body):
    """Turn bad input into one clear line and exit 2, with no traceback."""

    @functools.wraps(task_body)
    def wrapper(*args, **kwargs):
        try:
            return task_body(*args, **kwargs)
        except (InventoryError, TemplateError, UsageError, PreconditionFailed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=2) from None
        except TransportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper


def parse_set(values) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML scalars)."""
    parsed = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set '{item}': expected KEY=VALUE")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    return parsed


def resolve(path: str | None, default: str) -> str:
    """A path from the command line, or ``default`` relative to the repo root."""
    return str(Path(path)) if path else str(REPO_ROOT / default)


def select(c, inventory: str | None, group: str, limit: str | None, set_values=None):
    """Load the inventory and pick the hosts of ``group`` narrowed by ``--limit``.

    Without ``--inventory``, the path comes from invoke.yaml's ``veza.inventory`` (relative to the repo root).
    """
    default = c.config.get("veza", {}).get("inventory", "hosts.yaml") if c is not None else "hosts.yaml"
    loaded = load_inventory(resolve(inventory, default), cli_vars=parse_set(set_values))
    return loaded, loaded.select(group, limit)


def balancer(loaded):
    """The first host of the haproxy group: where the runtime API and the LB address live."""
    balancers = loaded.group("haproxy")
    if not balancers:
        raise UsageError(f"{loaded.path}: no 'haproxy' group; HAProxy's runtime API is reached through its first host")
    return balancers[0]


def secrets_for(hosts, path: str | None):
    """The secrets file from ``--secrets`` or the inventory's ``secrets_file`` (relative to the repo root)."""
    chosen = path or (hosts[0].vars.get("secrets_file") if hosts else None)
    if not chosen:
        raise UsageError("no secrets file: pass --secrets PATH or set secrets_file in the inventory")
    return load_secrets(str(chosen if Path(chosen).is_absolute() or path else REPO_ROOT / chosen))


def play(title, loaded, hosts, roles, *, check=False, diff=False, report=None, extra_secrets=(), parallel=True):
    """Plan every host (failing before any change), run, recap, report; exit 1 on failure."""
    plans = plan_hosts(hosts, roles, loaded)
    masker = Masker.for_hosts(hosts, extra_secrets)
    result = run_play(title, plans, check=check, diff=diff, output=Output(masker), parallel=parallel)
    if report:
        write_report(report, result.to_json(), masker)
    if result.failed:
        raise Exit(code=1)
    return result
