"""Inventory: hosts.yaml in Ansible's YAML inventory shape.

    all:
      vars: {...}
      children:
        <group>:
          vars: {...}
          hosts:
            <host>: {address: 10.0.0.2, ...}
          children: {...}

Variable precedence, lowest first: role defaults < ``all`` vars < group vars
(outer groups before inner ones) < host vars < values from the command line.
Every problem is raised as one ``InventoryError`` line naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

TRANSPORTS = ("incus", "ssh", "local")
# Ansible's spellings of the same transports, so an Ansible inventory ports over.
CONNECTION_ALIASES = {
    "community.general.incus": "incus",
    "incus": "incus",
    "ssh": "ssh",
    "paramiko": "ssh",
    "local": "local",
}
# Names that make a variable secret: masked in diffs, logs and reports.
SECRET_SUFFIXES = ("_password", "_secret", "_token", "_key")


class InventoryError(Exception):
    """A bad inventory or selection; the message is the one line shown to the user."""


@dataclass
class Host:
    name: str
    inventory_vars: dict
    groups: list
    cli_vars: dict = field(default_factory=dict)

    @property
    def vars(self) -> dict:
        return {**self.inventory_vars, **self.cli_vars}

    def vars_with(self, defaults: dict) -> dict:
        """The host's variables layered over a role's defaults."""
        return {**defaults, **self.inventory_vars, **self.cli_vars}

    @property
    def connection(self) -> str:
        return self.vars.get("connection", "incus")

    @property
    def address(self) -> str | None:
        return self.vars.get("address")

    def __repr__(self):
        return f"Host({self.name!r})"


def is_secret_name(name: str, secret_vars=()) -> bool:
    return name.endswith(SECRET_SUFFIXES) or name in secret_vars


@dataclass
class Inventory:
    path: str
    hosts: dict  # name -> Host, in file order
    groups: dict  # group -> [host names], in file order, descendants included

    def has_group(self, name: str) -> bool:
        return name in self.groups

    def group(self, name: str) -> list:
        return [self.hosts[h] for h in self.groups.get(name, [])]

    def select(self, pattern: str = "all", limit: str | None = None) -> list:
        """Hosts of a group (or ``all``), narrowed by ``--limit NAME[,NAME]``.

        A limit item may name a host or a group. A limit that matches nothing
        in the selection is an error: running on no host is never what was meant.
        """
        if pattern == "all":
            chosen = list(self.hosts.values())
        elif pattern in self.groups:
            chosen = self.group(pattern)
        else:
            raise InventoryError(
                f"{self.path}: no group '{pattern}' in the inventory; add it under all.children"
            )
        if not limit:
            return chosen
        wanted = set()
        for item in (part.strip() for part in limit.split(",")):
            if not item:
                continue
            if item in self.groups:
                wanted.update(self.groups[item])
            elif item in self.hosts:
                wanted.add(item)
            else:
                raise InventoryError(
                    f"{self.path}: --limit '{item}' matches no host or group; "
                    f"known hosts: {', '.join(self.hosts)}"
                )
        narrowed = [h for h in chosen if h.name in wanted]
        if not narrowed:
            raise InventoryError(
                f"{self.path}: --limit '{limit}' matches no host of '{pattern}' "
                f"({', '.join(h.name for h in chosen) or 'empty'})"
            )
        return narrowed


def _normalise_host_vars(path: str, name: str, values: dict) -> dict:
    """Accept Ansible's variable names as aliases for ours."""
    values = dict(values)
    if "ansible_host" in values:
        values.setdefault("address", values.pop("ansible_host"))
    if "ansible_connection" in values:
        values.setdefault("connection", values.pop("ansible_connection"))
    if "ansible_user" in values:
        values.setdefault("ssh_user", values.pop("ansible_user"))
    if "ansible_port" in values:
        values.setdefault("ssh_port", values.pop("ansible_port"))
    if "connection" in values:
        raw = values["connection"]
        if raw not in CONNECTION_ALIASES:
            raise InventoryError(
                f"{path}: host '{name}' has unknown connection '{raw}'; "
                f"use one of {', '.join(TRANSPORTS)}"
            )
        values["connection"] = CONNECTION_ALIASES[raw]
    return values


def _load_yaml(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found; pass --inventory PATH") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read inventory ({exc.strerror}); check its permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}:{where}: YAML syntax error: {problem}; fix the file") from None


def _mapping(path: str, value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{path}: {what} must be a mapping, got {type(value).__name__}")
    return value


def load_inventory(path: str, cli_vars: dict | None = None) -> Inventory:
    """Read and check an inventory file; raise InventoryError on any problem."""
    path = os.fspath(path)
    data = _load_yaml(path)
    if data is None:
        raise InventoryError(f"{path}: inventory is empty; it needs an 'all:' mapping")
    data = _mapping(path, data, "the top level")
    if "all" not in data:
        raise InventoryError(f"{path}: no top-level 'all:' group; wrap groups in all.children")
    host_layers: dict = {}  # host -> merged vars so far
    host_origin: dict = {}  # host -> (group it was defined in, its own vars)
    host_groups: dict = {}
    groups: dict = {}

    def walk(group: str, node, inherited: dict, lineage: list):
        node = _mapping(path, node, f"group '{group}'")
        unknown = set(node) - {"vars", "hosts", "children"}
        if unknown:
            raise InventoryError(
                f"{path}: group '{group}' has unknown key(s) {', '.join(sorted(unknown))}; "
                "a group holds only vars, hosts and children"
            )
        own_vars = _normalise_host_vars(path, f"group:{group}", _mapping(path, node.get("vars"), f"vars of group '{group}'"))
        layered = {**inherited, **own_vars}
        members = groups.setdefault(group, [])
        for host, host_vars in _mapping(path, node.get("hosts"), f"hosts of group '{group}'").items():
            host = str(host)
            host_vars = _normalise_host_vars(path, host, _mapping(path, host_vars, f"host '{host}'"))
            if host in host_origin and host_vars and host_origin[host][1] and host_vars != host_origin[host][1]:
                raise InventoryError(
                    f"{path}: host '{host}' is defined in groups '{host_origin[host][0]}' and '{group}' "
                    "with different vars; keep its vars in one place"
                )
            if host not in host_origin or host_vars:
                host_origin[host] = (group, host_vars)
            # Inner groups override outer ones: merge this group's layer over what the host had.
            host_layers[host] = {**host_layers.get(host, {}), **layered}
            host_groups.setdefault(host, [])
            for name in lineage + [group]:
                if name not in host_groups[host]:
                    host_groups[host].append(name)
                if host not in groups.setdefault(name, []):
                    groups[name].append(host)
        for child, child_node in _mapping(path, node.get("children"), f"children of group '{group}'").items():
            walk(str(child), child_node, layered, lineage + [group])
        if group not in groups:
            groups[group] = members

    walk("all", data["all"], {}, [])
    hosts = {}
    for name, layered in host_layers.items():
        merged = {**layered, **host_origin[name][1]}
        host = Host(name=name, inventory_vars=merged, groups=host_groups[name], cli_vars=dict(cli_vars or {}))
        connection = host.connection
        if connection not in TRANSPORTS:
            raise InventoryError(f"{path}: host '{name}' has unknown connection '{connection}'; use one of {', '.join(TRANSPORTS)}")
        if connection == "ssh" and not host.address:
            raise InventoryError(f"{path}: host '{name}' uses ssh but has no address; set 'address' (or ansible_host)")
        hosts[name] = host
    groups.pop("all", None)
    groups["all"] = list(hosts)
    return Inventory(path=path, hosts=hosts, groups=groups)
