"""``load_inventory``: read every source, build groups, resolve each host's variables and connection.

A problem that belongs to one host (a connection we do not implement, a template that fails,
a vault it needs and cannot open) is attached to that host instead of refusing the inventory:
``Inventory.select`` refuses it when a task targets the host, ``inventory.show`` marks it.
"""

from __future__ import annotations

import os

from .connection import _Settings
from .groups import _Builder, _HostEntry
from .ini_reader import IniReader
from .model import Host, Inventory, InventoryError
from .sources import inventory_files, split_sources, vars_base
from .vars_files import VarsFiles
from .yaml_reader import parse_yaml, read_text

YAML_EXTENSIONS = (".yaml", ".yml", ".json")  # the yaml plugin's yaml_extensions


def load_inventory(sources, cli_vars: dict | None = None) -> Inventory:
    """Read and check the inventory sources (a path, or a list of paths/comma-separated paths).

    Raises InventoryError for a problem of the whole inventory; a host's own problem is kept on the host.
    """
    paths = split_sources(sources)
    if not paths:
        raise InventoryError("no inventory given; pass --inventory PATH (a file or a folder)")
    builder = _Builder(paths[0])
    for source in paths:
        files = inventory_files(source)
        read = [path for path in files if _read_source(builder, path, single=len(files) == 1 and path == source)]
        if not read:
            raise InventoryError(f"{source}: no inventory file in this folder; add a YAML or INI inventory")
    builder.reconcile()
    vars_files = VarsFiles([vars_base(source) for source in paths])
    cli_vars = dict(cli_vars or {})
    hosts = {name: _host(builder, entry, cli_vars, vars_files) for name, entry in builder.hosts.items()}
    groups = {
        name: [host for host in hosts if name in hosts[host].groups]
        for name in builder.groups
    }
    return Inventory(
        path=",".join(paths),
        hosts=hosts,
        groups=groups,
        children={name: list(group.children) for name, group in builder.groups.items()},
        members={name: list(group.hosts) for name, group in builder.groups.items()},
    )


def _read_source(builder: _Builder, path: str, single: bool) -> bool:
    """One inventory file into the builder, as the yaml plugin or else the ini plugin reads it.

    Returns False for an empty file inside a folder (nothing to read); a single empty file is refused.
    """
    text = read_text(path)
    builder.path = path
    if text.startswith("#!"):
        raise InventoryError(f"{path}: an inventory script (#!) is not supported; write a static YAML or INI inventory")
    extension = os.path.splitext(path)[1]
    if extension == ".toml":
        raise InventoryError(f"{path}: TOML inventories are not supported; write it as YAML or INI")
    yaml_error, data = None, None
    if extension in YAML_EXTENSIONS or not extension:
        try:
            data = parse_yaml(path, text)
        except InventoryError as exc:
            yaml_error = exc  # maybe an INI file without extension
        else:
            if isinstance(data, dict) and data:
                builder.read_top(data)
                return True
            if data is None or data == {}:
                if single:
                    builder.read_top(data)  # refuses it: the inventory is empty
                return False
    try:
        IniReader(builder, path).read(text)
    except InventoryError:
        if extension in YAML_EXTENSIONS:  # a YAML file first: say what is wrong with it as YAML
            if yaml_error is not None:
                raise yaml_error from None
            builder.read_top(data)  # refuses the shape (a list, a string...)
        raise
    return True


def _host(builder: _Builder, entry: _HostEntry, cli_vars: dict, vars_files: VarsFiles) -> Host:
    """One resolved Host: merged Ansible vars, normalised settings, groups in precedence order."""
    ordered_groups = [g.name for g in builder.ordered_groups(entry)]
    merged = dict(entry.vars)
    try:
        ordered_groups, merged = builder.merged_vars(entry, vars_files)
        from_inventory, _ = _Settings(entry.source, entry.name, merged, {}).resolve()
        _, from_cli = _Settings(entry.source, entry.name, merged, cli_vars).resolve() if cli_vars else ({}, {})
    except InventoryError as exc:
        return Host(name=entry.name, inventory_vars=merged, groups=ordered_groups, cli_vars=dict(cli_vars),
                    ansible_vars=merged, problem=str(exc))
    return Host(
        name=entry.name,
        inventory_vars={**merged, **from_inventory},
        groups=ordered_groups,
        cli_vars={**cli_vars, **from_cli},
        ansible_vars=merged,
    )
