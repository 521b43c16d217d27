"""Reading groups and hosts into the tree as Ansible does: sections, group and host variables, host patterns."""

from __future__ import annotations

from .model import GROUP_SECTIONS, InventoryError
from .patterns import parse_host_pattern
from .tree import GroupTree, _Group, _HostEntry
from .yaml_reader import MAX_HOSTS


def _same_value(a, b) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True are different values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b or a != a and b != b  # NaN is the same NaN


class _Builder(GroupTree):
    """Reads the YAML data into groups and hosts, in Ansible's order and with its rules."""

    def read_top(self, data) -> None:
        """The whole document: a mapping of top-level groups (``all`` being one of them)."""
        if not data:
            raise InventoryError(f"{self.path}: inventory is empty; it needs an 'all:' group or other groups")
        if not isinstance(data, dict):
            raise InventoryError(
                f"{self.path}: the top level must be a mapping of groups (all: ...), got {type(data).__name__}"
            )
        if data.get("plugin"):
            raise InventoryError(
                f"{self.path}: this is an inventory plugin config (plugin: ...), not a YAML inventory; "
                "only static YAML inventories are supported"
            )
        for name, node in data.items():
            self.read_group(name, node)

    def read_group(self, name, node) -> str:
        """One group definition (a group may be defined or referenced in several places)."""
        if not isinstance(name, str) or not name:
            raise InventoryError(f"{self.path}: group name {name!r} is not a non-empty string; quote or fix it")
        if node is not None and not isinstance(node, dict):
            raise InventoryError(
                f"{self.path}: group '{name}' must be a mapping with vars/hosts/children, got {type(node).__name__}"
            )
        group = self.ensure_group(name)
        sections = self.sections(name, node or {})
        for key, section in sections.items():
            for entry, value in section.items():
                if key == "vars":
                    self.set_group_var(group, entry, value)
                elif key == "children":
                    self.add_child(group, self.read_group(entry, value))
                else:
                    self.read_hosts(name, entry, value)
        return name

    def ensure_group(self, name: str) -> _Group:
        """The group of that name, created on first mention (in any source)."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(name)
        return group

    def sections(self, name: str, node: dict) -> dict:
        """vars/children/hosts of a group node, in file order; a plain string is a one-entry mapping."""
        unknown = [str(key) for key in node if key not in GROUP_SECTIONS]
        if unknown:
            raise InventoryError(
                f"{self.path}: group '{name}' has unknown key(s) {', '.join(unknown)}; "
                "a group holds only vars, hosts and children (indent hosts under hosts:)"
            )
        sections = {}
        for key, value in node.items():
            if isinstance(value, str):
                value = {value: None}
            if value is not None and not isinstance(value, dict):
                raise InventoryError(
                    f"{self.path}: {key} of group '{name}' must be a mapping, got {type(value).__name__}"
                )
            sections[key] = value or {}
        return sections

    def set_group_var(self, group: _Group, name, value) -> None:
        """A group variable; a later definition of the group overwrites it (as in Ansible)."""
        self.check_var_name(name, f"group '{group.name}'")
        if name != "ansible_group_priority":
            group.vars[name] = value
            return
        try:
            group.priority = int(value)
        except (TypeError, ValueError):
            raise InventoryError(
                f"{self.path}: group '{group.name}': ansible_group_priority {value!r} is not an integer"
            ) from None

    def check_var_name(self, name, owner: str) -> None:
        """Ansible only deprecates non-string names; they would break sorting and JSON here, so refuse them."""
        if not isinstance(name, str):
            raise InventoryError(f"{self.path}: {owner}: variable name {name!r} is not a string; quote it")

    def read_hosts(self, group: str, pattern, values, ini: bool = False) -> None:
        """One ``hosts:`` entry (or INI host line): a host pattern and its vars."""
        names, port = parse_host_pattern(self.path, pattern)
        if ini and port is None and pattern.strip().endswith(":"):
            raise InventoryError(f"{self.path}: host pattern '{pattern}' ends in ':'; that is reserved for a port")
        values = values or {}
        if not isinstance(values, dict):
            raise InventoryError(
                f"{self.path}: host '{pattern}' in group '{group}' must be a mapping of vars, got {type(values).__name__}"
            )
        for name in names:
            self.add_host(name, group, (group, pattern, self.path), port, values)

    def add_host(self, name: str, group: str, where: tuple, port, values: dict) -> None:
        """Ansible keeps the first appearance's port and lets later vars overwrite: we refuse real conflicts.

        A host named like an existing group hands its vars to that group, as Ansible's
        ``InventoryData.set_variable`` does (it looks the name up among groups first); its port stays its own.
        """
        entry = self.hosts.get(name)
        if entry is None:
            if len(self.hosts) >= MAX_HOSTS:
                raise InventoryError(f"{self.path}: more than {MAX_HOSTS} hosts; split the inventory")
            entry = self.hosts[name] = _HostEntry(name, self.path)
            if port:  # Ansible ignores port 0
                self.set_host_var(entry, "ansible_port", port, where)
        elif port and not _same_value(entry.vars.get("ansible_port"), port):
            raise InventoryError(
                f"{self.path}: host '{name}' gets port {port} in group '{group}' after its first appearance; "
                "Ansible ignores that, so put the port where the host first appears"
            )
        for key, value in values.items():
            self.check_var_name(key, f"host '{name}'")
            if name in self.groups:
                self.set_group_var(self.groups[name], key, value)
            else:
                self.set_host_var(entry, key, value, where)
        if group not in entry.groups:
            entry.groups.append(group)
            self.groups[group].hosts.append(name)

    def set_host_var(self, entry: _HostEntry, key: str, value, where: tuple) -> None:
        """A host variable. Within one file a different value from another appearance of the host is
        refused (one of them is a mistake); a later source overriding an earlier one wins, as in Ansible."""
        earlier = entry.set_in.get(key)
        if earlier is not None and earlier != where and earlier[2] == where[2] and not _same_value(entry.vars[key], value):
            raise InventoryError(
                f"{self.path}: host '{entry.name}' is defined in groups '{earlier[0]}' and '{where[0]}' "
                f"with different values for '{key}'; keep its vars in one place"
            )
        entry.vars[key] = value
        entry.set_in[key] = where

