"""``load_inventory``: read, build groups, resolve each host's variables and connection."""

from __future__ import annotations

import os

from .connection import _Settings
from .groups import _Builder, _HostEntry
from .model import Host, Inventory, InventoryError
from .yaml_reader import _read_yaml

def load_inventory(path, cli_vars: dict | None = None) -> Inventory:
    """Read and check an inventory file; raise InventoryError on any problem."""
    path = os.fspath(path)
    _refuse_vars_folders(path)
    builder = _Builder(path)
    builder.read_top(_read_yaml(path))
    builder.reconcile()
    cli_vars = dict(cli_vars or {})
    hosts = {name: _host(path, builder, entry, cli_vars) for name, entry in builder.hosts.items()}
    groups = {
        name: [host for host in hosts if name in hosts[host].groups]
        for name in builder.groups
    }
    return Inventory(
        path=path,
        hosts=hosts,
        groups=groups,
        children={name: list(group.children) for name, group in builder.groups.items()},
        members={name: list(group.hosts) for name, group in builder.groups.items()},
    )


def _refuse_vars_folders(path: str) -> None:
    """ansible-inventory would merge group_vars/ and host_vars/ beside the file; we read only the file."""
    for folder in ("group_vars", "host_vars"):
        if os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(path)), folder)):
            raise InventoryError(f"{path}: {folder}/ next to the inventory is not read; move those variables into the file")


def _host(path: str, builder: _Builder, entry: _HostEntry, cli_vars: dict) -> Host:
    """One resolved Host: merged Ansible vars, normalised settings, groups in precedence order."""
    ordered_groups, merged = builder.merged_vars(entry)
    from_inventory, _ = _Settings(path, entry.name, merged, {}).resolve()
    _, from_cli = _Settings(path, entry.name, merged, cli_vars).resolve() if cli_vars else ({}, {})
    return Host(
        name=entry.name,
        inventory_vars={**merged, **from_inventory},
        groups=ordered_groups,
        cli_vars={**cli_vars, **from_cli},
        ansible_vars=merged,
    )
