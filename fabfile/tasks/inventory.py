"""inv inventory.show: what the loader resolved, like ``ansible-inventory --list/--host/--graph``, secrets masked."""

from __future__ import annotations

import datetime
import json

from invoke import Collection

from ..inventory import InventoryError, masked
from ..masking import escaped
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
    print(escaped(text, keep_newlines=True))  # host names and values from outside: no raw control characters


def problems_text(loaded) -> str:
    """The variable schema's problems, one marked line per host (a task targeting that host refuses)."""
    from ..schema import host_problems

    lines = [f"! {host.name}: {problem}" for host in loaded.hosts.values() for problem in host_problems(host.vars)]
    return "".join(f"\n{line}" for line in lines)


def host_vars_text(loaded, name: str) -> str:
    """One host's inventory variables (Ansible's and our normalised names) as sorted JSON, secrets masked."""
    if name not in loaded.hosts:
        raise InventoryError(f"{loaded.path}: no host '{name}'; known hosts: {', '.join(loaded.hosts) or 'none'}")
    values = loaded.hosts[name].inventory_vars
    secret_vars = values.get("secret_vars") or ()
    shown = masked({str(k): v for k, v in values.items()}, secret_vars if isinstance(secret_vars, list) else ())
    return json.dumps(shown, indent=4, sort_keys=True, default=_json_scalar)


def _json_scalar(value):
    """Dates as ISO text (as ansible-inventory prints them); anything else YAML can hold as its repr."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return repr(value)


def graph_text(loaded) -> str:
    """``@all:`` and its tree of groups and direct hosts, in ansible-inventory --graph's layout."""
    lines: list = []

    def walk(group: str, depth: int):
        lines.append(_graph_line(f"@{group}:", depth))
        for child in loaded.children.get(group, []):
            walk(child, depth + 1)
        if group != "all":
            lines.extend(_graph_line(host, depth + 1) for host in loaded.members.get(group, []))

    walk("all", 0)
    return "\n".join(lines)


def _graph_line(text: str, depth: int) -> str:
    text = escaped(text)
    return "  |" * depth + f"--{text}" if depth else text


def summary_text(loaded) -> str:
    """One line per host: name, transport, where it connects, groups (without all)."""
    rows = [("host", "connection", "target", "groups")]
    for host in loaded.hosts.values():
        rows.append(tuple(escaped(cell) for cell in (
            host.name, host.connection, _target(host), ",".join(g for g in host.groups if g != "all"))))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}" for row in rows
    )


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
