"""Inventory: an Ansible YAML inventory, read the way ``ansible-inventory`` (ansible-core 2.19) reads it.

Hosts, groups (with ``all`` and ``ungrouped``) and each host's merged variables agree with
``ansible-inventory --list``; ``docs/inventory.md`` lists what is refused instead. Shape::

    all:                      # and/or other top-level groups beside it
      vars: {...}
      hosts: {...}
      children:
        <group>:
          vars: {...}
          hosts:
            <host pattern>: {...}     # web-[01:20].example.com, db:2222, [2001:db8::1]:22
          children: {<group defined here or elsewhere>: }

Variable precedence, lowest first: role defaults < ``all`` vars < parent groups < child groups
(same depth: by ``ansible_group_priority``, then by name) < host vars < ``--set`` values.

Each host keeps two views of its inventory variables: ``ansible_vars``, exactly what Ansible
merges, and ``inventory_vars``, the same plus our normalised connection settings (``connection``,
``address``, ``ssh_user``... see ``SETTINGS``) that the transports read.
Every problem is one ``InventoryError`` line naming the file.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import dataclass, field

import yaml

# Ansible connection plugin names we implement, and the transport each one is.
CONNECTION_ALIASES = {
    "ssh": "ssh",
    "ansible.builtin.ssh": "ssh",
    "smart": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "local": "local",
    "ansible.builtin.local": "local",
    "incus": "incus",
    "community.general.incus": "incus",
}
DEFAULT_CONNECTION = "ssh"  # Ansible's default when nothing sets a connection
# Names that make a variable secret: masked in diffs, logs, reports and `inventory.show`.
SECRET_SUFFIXES = ("_password", "_secret", "_token", "_key", "_pass", "_passphrase")
GROUP_SECTIONS = ("vars", "children", "hosts")
MASK = "********"

# Bounds that keep hostile input to one error line instead of a hang or a traceback.
MAX_NESTING = 64  # nested YAML mappings/lists
MAX_NODES = 1_000_000  # YAML values once aliases are expanded
MAX_HOSTS = 100_000  # hosts in one inventory (after range expansion)

# Each normalised setting and the variable names that feed it, lowest preference first: as in
# Ansible's connection plugins, the last one set wins, so an ansible_* spelling beats ours.
SSH_SETTINGS = {
    "address": ("address", "ansible_host", "ansible_ssh_host"),
    "ssh_user": ("ssh_user", "ansible_user", "ansible_ssh_user"),
    "ssh_port": ("ssh_port", "ansible_port", "ansible_ssh_port"),
    "ssh_key_file": ("ssh_key_file", "ansible_private_key_file", "ansible_ssh_private_key_file"),
    "ssh_known_hosts": ("ssh_known_hosts",),
    "ssh_host_key_policy": ("ssh_host_key_policy",),
    "ssh_proxy_jump": ("ssh_proxy_jump",),
}
# community.general.incus: ansible_host is the instance name there, not an address.
INCUS_SETTINGS = {
    "address": ("address",),
    "incus_name": ("incus_name", "ansible_host", "ansible_incus_host"),
    "incus_remote": ("incus_remote", "ansible_incus_remote"),
}
LOCAL_SETTINGS = {"address": ("address", "ansible_host", "ansible_ssh_host")}
SETTINGS = {"ssh": SSH_SETTINGS, "incus": INCUS_SETTINGS, "local": LOCAL_SETTINGS}
HOST_KEY_CHECKING = ("ansible_host_key_checking", "ansible_ssh_host_key_checking")
# Ansible passes these to ssh in this order; for ssh's -o options the first value given wins.
SSH_ARG_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
# ssh options that change nothing about where or as whom we connect, so they are safely ignored.
HARMLESS_SSH_OPTIONS = {
    "controlmaster", "controlpersist", "controlpath", "serveraliveinterval", "serveralivecountmax",
    "connecttimeout", "connectionattempts", "loglevel", "compression", "tcpkeepalive", "identitiesonly",
    "forwardagent", "addkeystoagent", "hashknownhosts", "checkhostip", "updatehostkeys", "batchmode",
    "gssapiauthentication", "preferredauthentications", "pubkeyauthentication", "passwordauthentication",
    "kbdinteractiveauthentication", "visualhostkey",
}
HARMLESS_SSH_FLAGS = set("46ACqTtvxY")
TRUE_WORDS = {"yes", "on", "1", "true", "y", "t"}
FALSE_WORDS = {"no", "off", "0", "false", "n", "f"}


class InventoryError(Exception):
    """A bad inventory or selection; the message is the one line shown to the user."""


@dataclass
class Host:
    name: str
    inventory_vars: dict  # ansible_vars plus our normalised connection settings
    groups: list  # "all", then every group of the host in precedence order
    cli_vars: dict = field(default_factory=dict)
    ansible_vars: dict = field(default_factory=dict)  # exactly what ansible-inventory --list shows

    @property
    def vars(self) -> dict:
        """Inventory variables with the command line's ``--set`` values on top."""
        return {**self.inventory_vars, **self.cli_vars}

    def vars_with(self, defaults: dict) -> dict:
        """The host's variables layered over a role's defaults."""
        return {**defaults, **self.inventory_vars, **self.cli_vars}

    @property
    def connection(self) -> str:
        """incus, ssh or local."""
        return self.vars.get("connection", DEFAULT_CONNECTION)

    @property
    def address(self) -> str | None:
        """The address set in the inventory (HAProxy server lines need one); None when unset."""
        return self.vars.get("address")

    @property
    def ssh_address(self) -> str:
        """Where ssh connects: the address, else the inventory name (as Ansible does)."""
        return self.address or self.name

    def __repr__(self):
        return f"Host({self.name!r})"


def is_secret_name(name, secret_vars=()) -> bool:
    """True for variables whose value must never be shown (``*_password``, ``secret_vars``...)."""
    return (isinstance(name, str) and name.endswith(SECRET_SUFFIXES)) or name in secret_vars


@dataclass
class Inventory:
    path: str
    hosts: dict  # name -> Host, in file order
    groups: dict  # group -> [host names], descendants included, in file order
    children: dict = field(default_factory=dict)  # group -> [child group names], as Ansible lists them
    members: dict = field(default_factory=dict)  # group -> [host names listed directly in it]

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


def masked(values, secret_vars=()):
    """A copy of ``values`` with every secret-named entry (at any depth) replaced by ``********``."""
    if isinstance(values, dict):
        return {k: MASK if is_secret_name(k, secret_vars) else masked(v, secret_vars) for k, v in values.items()}
    if isinstance(values, list):
        return [masked(v, secret_vars) for v in values]
    return values


# ---------------------------------------------------------------- reading the YAML


class _Refused(Exception):
    """Raised inside the YAML constructor; becomes an InventoryError with the file name."""


class _InventoryLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML plus Ansible's inventory tags: ``!unsafe`` is a plain value, ``!vault`` is refused."""


def _construct_unsafe(loader, node):
    """``!unsafe`` only stops Ansible from templating; we never template inventory values."""
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _refuse_vault(loader, node):
    """Vault text needs Ansible's vault password; we keep secrets in the secrets file instead."""
    raise _Refused(
        f"line {node.start_mark.line + 1}: !vault values cannot be decrypted here; "
        "move the secret to the secrets file (secrets_file)"
    )


_InventoryLoader.add_constructor("!unsafe", _construct_unsafe)
_InventoryLoader.add_constructor("!vault", _refuse_vault)


def _read_yaml(path: str):
    """The file's YAML data, or one InventoryError line (missing, unreadable, bad syntax, hostile)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found; pass --inventory PATH") from None
    except UnicodeDecodeError:
        raise InventoryError(f"{path}: inventory is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read inventory ({exc.strerror}); check its permissions") from None
    try:
        data = yaml.load(text, Loader=_InventoryLoader)
    except _Refused as exc:
        raise InventoryError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}:{where}: YAML syntax error: {problem}; fix the file") from None
    except RecursionError:
        raise InventoryError(f"{path}: YAML nested too deeply (over {MAX_NESTING} levels); flatten it") from None
    _check_shape(path, data)
    return data


def _check_shape(path: str, data) -> None:
    """Refuse self-referencing aliases, deep nesting and alias bombs, so later code may recurse freely."""
    expanded: dict = {}  # id(container) -> number of values it holds once aliases are expanded
    open_containers: set = set()
    pending = [(data, 0, False)]
    while pending:
        node, depth, finished = pending.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        inner = list(node.values()) if isinstance(node, dict) else node
        if finished:
            open_containers.discard(key)
            expanded[key] = 1 + sum(expanded.get(id(value), 1) for value in inner)
            if expanded[key] > MAX_NODES:
                raise InventoryError(f"{path}: YAML aliases expand to over {MAX_NODES} values; write the data out")
            continue
        if key in expanded:
            continue
        if key in open_containers:
            raise InventoryError(f"{path}: a YAML alias refers to itself (an endless value); remove that alias")
        if depth >= MAX_NESTING:
            raise InventoryError(f"{path}: YAML nested too deeply (over {MAX_NESTING} levels); flatten it")
        open_containers.add(key)
        pending.append((node, depth, True))
        pending.extend((value, depth + 1, False) for value in inner)


# ---------------------------------------------------------------- host patterns


def _ansible_host_grammar() -> dict:
    """Ansible's host/IP grammar (parsing/utils/addresses.py), used to decide whether ``:NN`` is a port."""
    numeric = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
    hexadecimal = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
    alphanumeric = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
    ipv6_part = rf"(?:[0-9a-f]{{1,4}}|{hexadecimal})"
    ipv4_part = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{numeric})"
    label = rf"(?:[\w]|{alphanumeric})(?:[\w_-]|{alphanumeric})*(?<![_-])"
    ipv4_dotted = rf"(?:{ipv4_part}\.){{3}}{ipv4_part}"
    p = ipv6_part
    ipv6 = (
        rf"(?:(?:{p}:){{7}}{p}|(?:{p}:){{1,6}}:|(?:{p}:)(?::{p}){{1,6}}|(?:{p}:){{2}}(?::{p}){{1,5}}|"
        rf"(?:{p}:){{3}}(?::{p}){{1,4}}|(?:{p}:){{4}}(?::{p}){{1,3}}|(?:{p}:){{5}}(?::{p}){{1,2}}|"
        rf"(?:{p}:){{6}}(?::{p})|:(?::{p}){{1,6}}|{p}?::|(?:0:){{6}}{ipv4_dotted}|"
        rf"::(?:ffff:)?{ipv4_dotted}|(?:0:){{5}}ffff:{ipv4_dotted})"
    )
    return {
        "bracketed_hostport": re.compile(r"^\[(.+)\]:([0-9]+)$"),
        "hostport": re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"),
        "host": re.compile(rf"^(?:{ipv4_dotted}|{ipv6}|{label}(?:\.{label})*)$", re.I | re.UNICODE),
    }


HOST_PATTERNS = _ansible_host_grammar()


def _split_port(pattern: str) -> tuple:
    """``host:port`` / ``[v6]:port`` -> (host, port); the pattern unchanged (no port) if it is no valid host."""
    host, port = pattern, None
    for name in ("bracketed_hostport", "hostport"):
        match = HOST_PATTERNS[name].match(host)
        if match:
            host, port = match.group(1), int(match.group(2))
    if not HOST_PATTERNS["host"].match(host):
        return pattern, None
    return host, port


def _range_values(path: str, pattern: str, bounds: str) -> tuple:
    """The values of one ``[begin:end(:step)]`` range and how to format them (zero padding kept)."""
    parts = bounds.split(":")
    if len(parts) not in (2, 3):
        raise InventoryError(f"{path}: host pattern '{pattern}': a range is [begin:end] or [begin:end:step]")
    begin, end = parts[0] or "0", parts[1]
    step = parts[2] if len(parts) == 3 else "1"
    if not end:
        raise InventoryError(f"{path}: host pattern '{pattern}': a range needs an end value")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and width != len(end):
        raise InventoryError(f"{path}: host pattern '{pattern}': zero-padded begin and end must have the same length")
    try:
        if begin in string.ascii_letters and end in string.ascii_letters:
            first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
            if first > last:
                raise InventoryError(f"{path}: host pattern '{pattern}': a range needs begin <= end")
            return list(string.ascii_letters[first:last + 1:int(step)]), width
        return range(int(begin), int(end) + 1, int(step)), width
    except ValueError:
        raise InventoryError(
            f"{path}: host pattern '{pattern}': range [{bounds}] is not numeric or a-z; write it like [01:20] or [a:f]"
        ) from None


def _expand_pattern(path: str, pattern: str) -> list:
    """``web[01:03:2].x`` -> ["web01.x", "web03.x"], ranges expanded left to right like Ansible."""
    done, todo = [], [pattern]
    while todo:
        name = todo.pop()
        if "[" not in name:
            done.append(name)
            continue
        pieces = name.replace("[", "|", 1).replace("]", "|", 1).split("|")
        if len(pieces) != 3:
            raise InventoryError(f"{path}: host pattern '{pattern}': unbalanced [ ] or a '|' in the name; fix the pattern")
        head, bounds, tail = pieces
        values, width = _range_values(path, pattern, bounds)
        if len(values) * (len(done) + len(todo) + 1) > MAX_HOSTS:
            raise InventoryError(f"{path}: host pattern '{pattern}' expands to over {MAX_HOSTS} hosts; narrow the range")
        todo.extend(reversed([f"{head}{str(v).zfill(width)}{tail}" for v in values]))
    return done


def parse_host_pattern(path: str, pattern) -> tuple:
    """A hosts: key -> ([host names], port or None), as Ansible's YAML inventory reads it."""
    if not isinstance(pattern, str):
        raise InventoryError(f"{path}: host name {pattern!r} is not a string; quote it")
    if not pattern:
        raise InventoryError(f"{path}: a host has an empty name; name it")
    host, port = _split_port(pattern)
    return _expand_pattern(path, host), port


# ---------------------------------------------------------------- groups and hosts, as Ansible builds them


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
    vars: dict = field(default_factory=dict)
    set_in: dict = field(default_factory=dict)  # var -> (group, pattern) that set it
    groups: list = field(default_factory=list)  # groups listing the host directly


def _same_value(a, b) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True are different values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b or a != a and b != b  # NaN is the same NaN


class _Builder:
    """Reads the YAML data into groups and hosts, in Ansible's order and with its rules."""

    def __init__(self, path: str):
        self.path = path
        self.groups = {"all": _Group("all"), "ungrouped": _Group("ungrouped", parents=["all"])}
        self.groups["all"].children.append("ungrouped")
        self.hosts: dict = {}

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
        group = self.groups.setdefault(name, _Group(name))
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

    def read_hosts(self, group: str, pattern, values) -> None:
        """One ``hosts:`` entry: a host pattern and its vars."""
        names, port = parse_host_pattern(self.path, pattern)
        values = values or {}
        if not isinstance(values, dict):
            raise InventoryError(
                f"{self.path}: host '{pattern}' in group '{group}' must be a mapping of vars, got {type(values).__name__}"
            )
        for name in names:
            self.add_host(name, group, (group, pattern), port, values)

    def add_host(self, name: str, group: str, where: tuple, port, values: dict) -> None:
        """Ansible keeps the first appearance's port and lets later vars overwrite: we refuse real conflicts."""
        entry = self.hosts.get(name)
        if entry is None:
            if len(self.hosts) >= MAX_HOSTS:
                raise InventoryError(f"{self.path}: more than {MAX_HOSTS} hosts; split the inventory")
            entry = self.hosts[name] = _HostEntry(name)
            if port:  # Ansible ignores port 0
                self.set_host_var(entry, "ansible_port", port, where)
        elif port and not _same_value(entry.vars.get("ansible_port"), port):
            raise InventoryError(
                f"{self.path}: host '{name}' gets port {port} in group '{group}' after its first appearance; "
                "Ansible ignores that, so put the port where the host first appears"
            )
        for key, value in values.items():
            self.check_var_name(key, f"host '{name}'")
            self.set_host_var(entry, key, value, where)
        if group not in entry.groups:
            entry.groups.append(group)
            self.groups[group].hosts.append(name)

    def set_host_var(self, entry: _HostEntry, key: str, value, where: tuple) -> None:
        """A host variable; a different value from another appearance of the host is refused."""
        earlier = entry.set_in.get(key)
        if earlier is not None and earlier != where and not _same_value(entry.vars[key], value):
            raise InventoryError(
                f"{self.path}: host '{entry.name}' is defined in groups '{earlier[0]}' and '{where[0]}' "
                f"with different values for '{key}'; keep its vars in one place"
            )
        entry.vars[key] = value
        entry.set_in[key] = where

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

    def merged_vars(self, entry: _HostEntry) -> tuple:
        """(groups in precedence order, merged vars): group vars by depth, priority, name; host vars last."""
        ordered = sorted(
            (self.groups[name] for name in self.closure(entry.groups)),
            key=lambda g: (g.depth, g.priority, g.name),
        )
        merged: dict = {}
        for group in ordered:
            merged.update(group.vars)
        merged.update(entry.vars)
        return [g.name for g in ordered], merged


# ---------------------------------------------------------------- connection settings


def _first_set(values: dict, names: tuple):
    """(name, value) of the winning spelling: the last of ``names`` set to something other than None."""
    found = (None, None)
    for name in names:
        if values.get(name) is not None:
            found = (name, values[name])
    return found


class _Settings:
    """Normalises one host's connection variables; ``--set`` values beat inventory ones, whatever the spelling."""

    def __init__(self, path: str, host: str, inventory_vars: dict, cli_vars: dict):
        self.path, self.host = path, host
        self.layers = (("cli", cli_vars), ("inventory", inventory_vars))

    def fail(self, what: str):
        """Stop with one line naming the file and the host."""
        raise InventoryError(f"{self.path}: host '{self.host}': {what}")

    def lookup(self, names: tuple) -> tuple:
        """(layer, variable name, value) of the first layer that sets any of ``names``."""
        for layer, values in self.layers:
            name, value = _first_set(values, names)
            if name is not None:
                return layer, name, value
        return None, None, None

    def resolve(self) -> tuple:
        """({normalised name: value} from the inventory, the same from --set)."""
        found = {"inventory": {}, "cli": {}}
        layer, name, raw = self.lookup(("connection", "ansible_connection"))
        connection = self.transport(name, raw) if name else DEFAULT_CONNECTION
        found[layer or "inventory"]["connection"] = connection
        for setting, names in SETTINGS[connection].items():
            layer, name, value = self.lookup(names)
            if name is not None:
                found[layer][setting] = self.checked(setting, name, value)
        if connection == "ssh":
            self.ssh_extras(found)
        if connection == "incus":
            self.incus_project()
        return found["inventory"], found["cli"]

    def transport(self, name: str, raw) -> str:
        """incus, ssh or local for a connection plugin name we implement."""
        if not isinstance(raw, str) or raw not in CONNECTION_ALIASES:
            self.fail(
                f"{name} {raw!r} is not a connection we implement; "
                "use ssh, local or community.general.incus (ansible.builtin.* spellings accepted)"
            )
        return CONNECTION_ALIASES[raw]

    def checked(self, setting: str, name: str, value):
        """A scalar, untemplated value; ports become ints."""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(f"{name} must be a string, got {type(value).__name__}")
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            self.fail(f"{name} '{value}' is a Jinja template; connection variables are not templated, write the value")
        if setting == "ssh_port":
            if not str(value).strip().isdigit() or not 0 < int(value) < 65536:
                self.fail(f"{name} {value!r} is not a port number (1-65535)")
            return int(value)
        return value

    def ssh_extras(self, found: dict) -> None:
        """Host key checking and ssh command-line args (jump hosts) -> our ssh_* settings.

        Within one layer they beat our own ssh_* names (Ansible spellings win, as above);
        a --set value of any spelling beats the inventory.
        """
        for layer, values in self.layers:
            derived = {}
            for name in SSH_ARG_VARS:
                if values.get(name) is not None:
                    for setting, value in self.ssh_args(name, values[name]).items():
                        derived.setdefault(setting, value)  # ssh keeps the first value it is given
            name, value = _first_set(values, HOST_KEY_CHECKING)
            if name is not None:
                derived["ssh_host_key_policy"] = "strict" if self.boolean(name, value) else "accept-new"
            for setting, value in derived.items():
                if layer == "cli" or setting not in found["cli"]:
                    found[layer][setting] = value

    def boolean(self, name: str, value) -> bool:
        """Ansible's boolean spellings (yes/no, true/false, on/off, 1/0)."""
        word = str(value).strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            self.fail(f"{name} {value!r} is not a boolean")
        return word in TRUE_WORDS

    def ssh_args(self, name: str, value) -> dict:
        """Parse ssh args: -J / ProxyJump / a ``ssh -W %h:%p`` ProxyCommand, host key options; refuse the rest."""
        if not isinstance(value, str):
            self.fail(f"{name} must be a string of ssh arguments, got {type(value).__name__}")
        self.checked("ssh_args", name, value)
        words = self.split(name, value)
        settings: dict = {}
        while words:
            word = words.pop(0)
            if word in ("-J", "-o"):
                if not words:
                    self.fail(f"{name}: {word} needs a value")
                argument = words.pop(0)
            elif word[:2] in ("-J", "-o"):
                word, argument = word[:2], word[2:]
            elif word.startswith("-") and len(word) > 1 and set(word[1:]) <= HARMLESS_SSH_FLAGS:
                continue
            else:
                self.unsupported(name, word)
            if word == "-J":
                settings.setdefault("ssh_proxy_jump", self.jump(name, argument))
            else:
                self.ssh_option(name, argument, settings)
        return settings

    def ssh_option(self, name: str, option: str, settings: dict) -> None:
        """One ``-o Key=Value`` (or ``Key Value``); ssh keeps the first value of each key."""
        key, _, value = option.replace("=", " ", 1).partition(" ")
        key, value = key.strip().lower(), value.strip()
        if key == "proxyjump":
            settings.setdefault("ssh_proxy_jump", self.jump(name, value))
        elif key == "proxycommand":
            settings.setdefault("ssh_proxy_jump", self.proxy_command(name, value))
        elif key == "stricthostkeychecking":
            strict = value.lower() in ("yes", "ask")
            settings.setdefault("ssh_host_key_policy", "strict" if strict else "accept-new")
        elif key == "userknownhostsfile":
            settings.setdefault("ssh_known_hosts", value.split()[0] if value else value)
        elif key not in HARMLESS_SSH_OPTIONS:
            self.unsupported(name, f"-o {option}")

    def jump(self, name: str, value: str) -> str:
        """A ProxyJump spec: [user@]host[:port], comma-separated for a chain."""
        hops = value.split(",")
        if not value or any(not hop or any(ch.isspace() for ch in hop) or hop.startswith("-") for hop in hops):
            self.fail(f"{name}: jump host '{value}' is not [user@]host[:port][,...]")
        return value

    def proxy_command(self, name: str, command: str) -> str:
        """``ssh [-q] -W %h:%p [-p PORT] [-l USER] [user@]host`` is a jump host; other commands are refused."""
        words = self.split(name, command)
        if not words or os.path.basename(words[0]) != "ssh":
            self.unsupported(name, f"ProxyCommand={command}")
        user = port = target = None
        forwards = False
        rest = words[1:]
        while rest:
            word = rest.pop(0)
            if word in ("-W", "-p", "-l") and rest:
                value = rest.pop(0)
                forwards = forwards or (word == "-W" and value == "%h:%p")
                port = value if word == "-p" else port
                user = value if word == "-l" else user
            elif word.startswith("-") and set(word[1:]) <= HARMLESS_SSH_FLAGS:
                continue
            elif not word.startswith("-") and target is None:
                target = word
            else:
                self.unsupported(name, f"ProxyCommand={command}")
        if not forwards or not target:
            self.unsupported(name, f"ProxyCommand={command}")
        spec = f"{user}@{target}" if user and "@" not in target else target
        return self.jump(name, f"{spec}:{port}" if port else spec)

    def split(self, name: str, text: str) -> list:
        """Shell-style words of an ssh argument string."""
        try:
            return shlex.split(text)
        except ValueError as exc:
            self.fail(f"{name} '{text}' cannot be split into arguments ({exc})")

    def unsupported(self, name: str, what: str):
        """Refuse an ssh argument we cannot honour, saying what is supported."""
        self.fail(
            f"{name}: '{what}' cannot be honoured; supported: -J/ProxyJump, ProxyCommand 'ssh -W %h:%p [user@]host', "
            "StrictHostKeyChecking, UserKnownHostsFile (and harmless ones like ControlPersist)"
        )

    def incus_project(self) -> None:
        """Our incus transport has no --project; only the default project is reachable."""
        _, name, project = self.lookup(("ansible_incus_project",))
        if name is not None and project != "default":
            self.fail(f"ansible_incus_project {project!r} is not supported; only the default Incus project is")


# ---------------------------------------------------------------- loading


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
