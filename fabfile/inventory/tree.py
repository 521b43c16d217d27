"""The group tree as Ansible holds it after parsing: parent/child edges (no cycles), ``ungrouped``,
depths, and the precedence order in which a host's group and file variables merge."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import InventoryError


@dataclass
class _Group:
    name: str
    vars: dict = field(default_factory=dict)
    children: list = field(default_factory=list)
    parents: list = field(default_factory=list)
    hosts: list = field(default_factory=list)
    priority: int = 1
    depth: int = 0


@dataclass
class _HostEntry:
    name: str
    source: str = ""  # the file where the host first appears (error lines name it)
    vars: dict = field(default_factory=dict)
    set_in: dict = field(default_factory=dict)  # var -> (group, pattern) that set it
    groups: list = field(default_factory=list)  # groups listing the host directly


class GroupTree:
    """Groups (with ``all`` and ``ungrouped``) and host entries; ``path`` names the file being read in errors."""

    def __init__(self, path: str):
        self.path = path
        self.groups = {"all": _Group("all"), "ungrouped": _Group("ungrouped", parents=["all"])}
        self.groups["all"].children.append("ungrouped")
        self.hosts: dict = {}
        self.group_layers: dict = {}  # frozenset of a host's direct groups -> (ordered names, merged group vars)

    def add_child(self, parent: _Group, child_name: str) -> None:
        """parent -> child edge; refuses cycles like Ansible does."""
        child = self.groups[child_name]
        if child_name in parent.children:
            return
        if child is parent or child_name == "all" or child_name in self.ancestors(parent.name):
            raise InventoryError(
                f"{self.path}: groups form a cycle ('{child_name}' is a child of '{parent.name}' "
                "and also its parent or ancestor); Ansible refuses it too"
            )
        parent.children.append(child_name)
        child.parents.append(parent.name)

    def ancestors(self, name: str) -> set:
        """Every group above ``name`` (not ``all`` unless linked explicitly)."""
        seen, todo = set(), list(self.groups[name].parents)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.groups[current].parents)
        return seen

    def reconcile(self) -> None:
        """What Ansible does after parsing: orphans under ``all``, ``ungrouped``, group depths."""
        for group in list(self.groups.values()):
            if group.name != "all" and not group.parents:
                self.add_child(self.groups["all"], group.name)
        ungrouped = self.groups["ungrouped"]
        for entry in self.hosts.values():
            others = [g for g in self.closure(entry.groups) if g not in ("all", "ungrouped")]
            if others and "ungrouped" in entry.groups:
                entry.groups.remove("ungrouped")
                ungrouped.hosts.remove(entry.name)
            elif not others and "ungrouped" not in entry.groups:
                entry.groups.append("ungrouped")
                ungrouped.hosts.append(entry.name)
        self.set_depths()

    def closure(self, direct: list) -> set:
        """The given groups and all their ancestors."""
        found = set(direct)
        for name in direct:
            found |= self.ancestors(name)
        return found

    def set_depths(self) -> None:
        """Depth = longest path from ``all`` (Ansible's Group.depth), in topological order."""
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        while ready:
            group = self.groups[ready.pop()]
            for child_name in group.children:
                child = self.groups[child_name]
                child.depth = max(child.depth, group.depth + 1)
                waiting[child_name] -= 1
                if waiting[child_name] == 0:
                    ready.append(child_name)

    def ordered_groups(self, entry: _HostEntry) -> list:
        """The host's groups (``all`` first) by depth, ``ansible_group_priority``, name: Ansible's sort_groups."""
        return sorted(
            (self.groups[name] for name in self.closure(entry.groups)),
            key=lambda g: (g.depth, g.priority, g.name),
        )

    def merged_vars(self, entry: _HostEntry, vars_files) -> tuple:
        """(group names in precedence order, the groups' merged vars (shared by the hosts in the same groups:
        read only), the host's own layers: its inventory vars then its ``host_vars/`` files), which merge
        in ansible-core 2.19's order (VariableManager):

        ``all`` then the other groups as written in the inventory < ``group_vars/all`` <
        ``group_vars/<group>`` in the same group order (source by source) < the host's inventory
        vars < ``host_vars/<host>``. ``vars_files(kind, name)`` gives the files' vars, source by source.
        """
        key = frozenset(entry.groups)  # hosts in the same groups share the group layers (most hosts do)
        if key not in self.group_layers:
            ordered = self.ordered_groups(entry)
            from_groups: dict = {}
            for group in ordered:
                from_groups.update(group.vars)
            for layer in vars_files.groups([g.name for g in ordered]):
                from_groups.update(layer)
            self.group_layers[key] = ([g.name for g in ordered], from_groups)
        names, from_groups = self.group_layers[key]
        return list(names), from_groups, [entry.vars, *vars_files.host(entry.name)]
