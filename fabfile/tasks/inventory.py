"""inv inventory.show: what the loader resolved, like ``ansible-inventory --list/--host/--graph``, secrets masked."""

from __future__ import annotations

import datetime
import json

from invoke import Collection

from ..masking import escaped
from ..output import Masker
from . import support
from .support import task

HELP = {
    "inventory": support.COMMON_HELP["inventory"],
    "host": "show this host's merged variables (as JSON, secrets masked)",
    "graph": "show the group tree with its hosts, like ansible-inventory --graph",
}


@task(help=HELP)
@support.user_errors
def show(c, inventory=None, host=None, graph=False):
    """Hosts, groups and variables as the loader resolved them; bad input is one error line, exit 2."""
    loaded = support.load(c, inventory)
    if host is not None:
        text = host_vars_text(loaded, host)
    elif graph:
        text = graph_text(loaded)
    else:
        text = summary_text(loaded) + problems_text(loaded)
    # vault-decrypted values masked whatever their names; host names and values from outside: no raw control characters
    print(escaped(Masker()(text), keep_newlines=True))


def problems_text(loaded) -> str:
    """The variable schema's problems, one marked line per host (a task targeting that host refuses)."""
    from ..schema import host_problems

    lines = [f"! {host.name}: {problem}" for host in loaded.hosts.values() for problem in host_problems(host.vars)]
    return "".join(f"\n{line}" for line in lines)


def host_vars_text(loaded, name: str) -> str:
    """One host's inventory variables (Ansible's and our normalised names) as sorted JSON, secrets masked."""
    from ..inventory import InventoryError, masked

    if name not in loaded.hosts:
        raise InventoryError(f"{loaded.path}: no host '{name}'; known hosts: {', '.join(loaded.hosts) or 'none'}")
    host = loaded.hosts[name]
    values = host.inventory_vars
    secret_vars = values.get("secret_vars") or ()
    shown = masked(_text_keys(values), secret_vars if isinstance(secret_vars, list) else ())
    text = json.dumps(shown, indent=4, sort_keys=True, default=_json_scalar)
    return f"{text}\n# refused for tasks: {host.problem}" if host.problem else text


def _text_keys(value):
    """Mapping keys as JSON writes them (``{10: a, default: b}`` -> "10", "default"), so mixed keys sort."""
    if isinstance(value, dict):
        return {_json_key(key): _text_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_text_keys(item) for item in value]
    return value


def _json_key(key) -> str:
    return json.dumps(key, default=_json_scalar).strip('"') if not isinstance(key, str) else key


def _json_scalar(value):
    """Dates as ISO text (as ansible-inventory prints them); anything else YAML can hold as its repr."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    from ..inventory.vault import SealedVault, VaultText

    if isinstance(value, (VaultText, SealedVault)):  # still encrypted (no task read it): as ansible-inventory shows it
        return {"__ansible_vault": value.ciphertext}
    if getattr(value, "sealed", False):  # a template reading a vault value, not rendered until a task reads it
        return value.raw
    return repr(value)


def graph_text(loaded) -> str:
    """``@all:`` and its tree of groups and direct hosts, in ansible-inventory --graph's layout."""
    lines: list = []
    pending = [(True, "all", 0)]  # a stack, not recursion: a group chain may be thousands deep
    while pending:
        is_group, name, depth = pending.pop()
        if not is_group:
            lines.append(_graph_line(name, depth))
            continue
        lines.append(_graph_line(f"@{name}:", depth))
        hosts = loaded.members.get(name, []) if name != "all" else []
        pending.extend(reversed([(True, child, depth + 1) for child in loaded.children.get(name, [])]
                                + [(False, host, depth + 1) for host in hosts]))
    return "\n".join(lines)


def _graph_line(text: str, depth: int) -> str:
    text = escaped(text)
    return "  |" * depth + f"--{text}" if depth else text


def summary_text(loaded) -> str:
    """One line per host: name, transport, where it connects, groups (without all)."""
    rows = [("host", "connection", "target", "groups")]
    refused = []
    for host in loaded.hosts.values():
        groups = ",".join(g for g in host.groups if g != "all")
        if host.problem:
            rows.append((f"{escaped(host.name)} (!)", "-", "refused for tasks", escaped(groups)))
            refused.append(f"(!) {escaped(host.name)}: {escaped(host.problem)}")
        else:
            rows.append(tuple(escaped(cell) for cell in (host.name, host.connection, _target(host), groups)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join([
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}" for row in rows
    ] + refused)


def _target(host) -> str:
    """Where commands go: ``[user@]address[:port]`` (via jump), ``remote:instance``, or this machine."""
    v = host.vars
    if host.connection == "incus":
        return f"{v.get('incus_remote') or 'local'}:{v.get('incus_name', host.name)}"
    if host.connection == "local":
        return "this machine"
    user = f"{v['ssh_user']}@" if v.get("ssh_user") else ""
    port = f":{v['ssh_port']}" if v.get("ssh_port") else ""
    jump = f" via {v['ssh_proxy_jump']}" if v.get("ssh_proxy_jump") else ""
    return f"{user}{host.ssh_address}{port}{jump}"


collection = Collection("inventory", show)
