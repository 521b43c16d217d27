"""``load_inventory``: read every source, build groups, resolve each host's variables and connection.

A problem that belongs to one host (a connection we do not implement, a template that fails,
a vault it needs and cannot open) is attached to that host instead of refusing the inventory:
``Inventory.select`` refuses it when a task targets the host, ``inventory.show`` marks it.
"""

from __future__ import annotations

import os

from .connection import CONNECTION_VARIABLES, _Settings
from .groups import _Builder
from .tree import _HostEntry
from .ini_reader import IniReader
from .jinja import Templar, Unresolved
from .model import Host, Inventory, InventoryError
from .sources import inventory_files, split_sources, vars_base
from .vars_files import VarsFiles
from .vault import Sealed, Vault, holds_vault, is_vault_text, sealed
from .vault import current as current_vault
from .yaml_reader import parse_yaml, read_text

YAML_EXTENSIONS = (".yaml", ".yml", ".json")  # the yaml plugin's yaml_extensions
PLAIN_TYPES = (str, int, float, bool, type(None))  # values that cannot hold a !vault


def load_inventory(sources, cli_vars: dict | None = None, vault: Vault | None = None) -> Inventory:
    """Read and check the inventory sources (a path, or a list of paths/comma-separated paths).

    ``vault`` opens vault-encrypted files and ``!vault`` values (default: the command line's vault options).
    Raises InventoryError for a problem of the whole inventory; a host's own problem is kept on the host.
    """
    paths = split_sources(sources)
    if not paths:
        raise InventoryError("no inventory given; pass --inventory PATH (a file or a folder)")
    vault = vault if vault is not None else current_vault()
    builder = _Builder(paths[0])
    for source in paths:
        files = inventory_files(source)
        single = len(files) == 1 and files[0] == source
        read = [path for path in files if _read_source(builder, path, single, vault)]
        if not read:
            raise InventoryError(f"{source}: no inventory file in this folder; add a YAML or INI inventory")
    builder.reconcile()
    vars_files = VarsFiles([vars_base(source) for source in paths], decrypt=vault.decrypt)
    cli_vars = dict(cli_vars or {})
    sealed_groups: dict = {}  # id of a groups' layer (shared by hosts in the same groups) -> it sealed
    layers = {name: _layers(builder, entry, vars_files, vault, sealed_groups) for name, entry in builder.hosts.items()}
    groups: dict = {name: [] for name in builder.groups}  # group -> its hosts (descendants too), in file order
    for host, layer in layers.items():
        for name in layer[0]:
            groups[name].append(host)
    templar = Templar(
        raw={name: layer[2] for name, layer in layers.items()}, groups=groups,
        sources={name: entry.source for name, entry in builder.hosts.items()},
        secret_vars={name: _secret_vars(layer[2]) for name, layer in layers.items()},
        host_groups={name: layer[0] for name, layer in layers.items()},
    )
    hosts = {name: _host(entry, layers[name], cli_vars, templar) for name, entry in builder.hosts.items()}
    return Inventory(
        path=",".join(paths),
        hosts=hosts,
        groups=groups,
        children={name: list(group.children) for name, group in builder.groups.items()},
        members={name: list(group.hosts) for name, group in builder.groups.items()},
    )


def _read_source(builder: _Builder, path: str, single: bool, vault: Vault) -> bool:
    """One inventory file into the builder, as the yaml plugin or else the ini plugin reads it.

    Returns False for an empty file inside a folder (nothing to read); a single empty file is refused.
    A vault-encrypted inventory file is decrypted first (its hosts and groups are needed by every task).
    """
    text = read_text(path)
    if is_vault_text(text):
        text = vault.decrypt(text, path)
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


def _layers(builder: _Builder, entry: _HostEntry, vars_files: VarsFiles, vault: Vault, sealed_groups: dict) -> tuple:
    """(groups in precedence order, merged vars as ansible-inventory shows them, the same with inline
    vaults sealed (decrypted when a task reads them), or the host's problem). The groups' layer,
    shared by every host in the same groups, is sealed once (``sealed_groups``)."""
    try:
        ordered_groups, from_groups, own_layers = builder.merged_vars(entry, vars_files)
    except InventoryError as exc:  # a vars file that cannot be read or decrypted: this host's problem
        return [g.name for g in builder.ordered_groups(entry)], dict(entry.vars), {}, str(exc)
    if id(from_groups) not in sealed_groups:
        sealed_groups[id(from_groups)] = _sealed(from_groups, vault)
    merged, sealed_vars = dict(from_groups), dict(sealed_groups[id(from_groups)])
    for layer in own_layers:
        merged.update(layer)
        sealed_vars.update(_sealed(layer, vault))
    return ordered_groups, merged, sealed_vars, None


def _sealed(values: dict, vault: Vault) -> dict:
    """``values`` with every inline vault a ``Sealed`` value (see ``vault.sealed``)."""
    return {key: sealed(value, vault) if type(value) not in PLAIN_TYPES and holds_vault(value) else value
            for key, value in values.items()}


def _secret_vars(values: dict) -> tuple:
    names = values.get("secret_vars")
    return tuple(name for name in names if isinstance(name, str)) if isinstance(names, list) else ()


def _host(entry: _HostEntry, layers: tuple, cli_vars: dict, templar: Templar) -> Host:
    """One resolved Host: templated vars, normalised settings, groups in precedence order; or its problem."""
    ordered_groups, merged, resolved, problem = layers
    if problem is None:
        resolved = templar.variables(entry.name)
        try:
            for name in CONNECTION_VARIABLES if entry.name in templar.unresolved_hosts else ():
                if isinstance(resolved.get(name), Unresolved):
                    raise resolved[name].error  # where and as whom to connect must be known up front
            for name in CONNECTION_VARIABLES.intersection(resolved):
                if isinstance(resolved[name], Sealed):  # every task reads them: opened now (this host's problem if not)
                    resolved[name] = resolved[name].open()
            from_inventory, _ = _Settings(entry.source, entry.name, resolved, {}).resolve()
            _, from_cli = _Settings(entry.source, entry.name, resolved, cli_vars).resolve() if cli_vars else ({}, {})
        except InventoryError as exc:
            problem = str(exc)
    if problem is not None:
        return Host(name=entry.name, inventory_vars=resolved or merged, groups=ordered_groups,
                    cli_vars=dict(cli_vars), ansible_vars=merged, problem=problem)
    return Host(
        name=entry.name,
        inventory_vars={**resolved, **from_inventory},
        groups=ordered_groups,
        cli_vars={**cli_vars, **from_cli},
        ansible_vars=merged,
    )
