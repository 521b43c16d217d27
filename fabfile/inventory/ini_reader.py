"""INI inventories with the semantics of Ansible's ``ini`` plugin (ansible-core 2.19).

``[group]`` lists hosts (``host key=value ...``, ranges, ``host:port``); ``[group:vars]`` holds
``key = value`` lines; ``[group:children]`` names groups, which may be declared further down.
Lines before any section are hosts of ``ungrouped``; ``#`` and ``;`` start comment lines.
Every value is read as Ansible reads it: a Python literal when it is one (``8080`` is an int,
``True`` a bool, ``[1, 2]`` a list, ``'x'`` the string x), else the text as written.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings

from .model import InventoryError

SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
COMMENT_MARKERS = ("#", ";")
MAX_VALUE_LENGTH = 100_000  # literal_eval on longer text is slow and never what an inventory means


def parse_value(text: str):
    """A value as the ini plugin types it: ``ast.literal_eval`` when that works, the text otherwise."""
    value = text
    if len(text) <= MAX_VALUE_LENGTH:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
    return _coerced(value)


def _coerced(value):
    """What the plugin keeps of a literal: tuples and sets become lists, bytes text, ``...`` and complex text."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerced(item) for item in value]
    if isinstance(value, dict):
        return {key: _coerced(item) for key, item in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


class IniReader:
    """Feeds one INI file into the shared ``_Builder`` (several sources add up, as in Ansible)."""

    def __init__(self, builder, path: str):
        self.builder, self.path = builder, path
        self.line_number = 0

    def fail(self, what: str):
        raise InventoryError(f"{self.path}: line {self.line_number}: {what}")

    def read(self, text: str) -> None:
        pending: dict = {}  # group name -> (line, state, [parents]) declared by reference only
        group, state = "ungrouped", "hosts"
        for self.line_number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(COMMENT_MARKERS):
                continue
            section = SECTION.match(line)
            if section:
                group, state = section.group(1), section.group(2) or "hosts"
                self.open_section(group, state, pending)
            elif line.startswith("[") and line.endswith("]"):
                self.fail(f"invalid section '{line}'; write [group], [group:vars] or [group:children], without spaces")
            elif state == "hosts":
                self.host_line(group, line)
            elif state == "vars":
                key, value = self.variable(line)
                self.builder.set_group_var(self.builder.groups[group], key, value)
            else:
                self.child_line(group, line, pending)
        for name, (line_number, kind, parents) in pending.items():
            self.line_number = line_number
            if kind == "vars":
                self.fail(f"[{name}:vars] is for a group that is never declared; add a [{name}] section")
            self.fail(f"[{parents[-1]}:children] names '{name}', which is never declared; add a [{name}] section")

    def open_section(self, group: str, state: str, pending: dict) -> None:
        """A section header declares its group ([group:vars] only provisionally, as in Ansible)."""
        if state not in ("hosts", "children", "vars"):
            self.fail(f"section [{group}:{state}] has unknown type '{state}'; use hosts, vars or children")
        if group not in self.builder.groups:
            if state == "vars" and group not in pending:
                pending[group] = (self.line_number, "vars", [])
            self.builder.ensure_group(group)
        if group in pending and state != "vars":
            if pending[group][1] == "children":
                self.attach_pending(group, pending)
            else:
                del pending[group]

    def attach_pending(self, group: str, pending: dict) -> None:
        """A group named in [parent:children] before its own section: link it now."""
        for parent in pending[group][2]:
            self.builder.add_child(self.builder.groups[parent], group)
            if parent in pending and pending[parent][1] == "children":
                self.attach_pending(parent, pending)
        pending.pop(group, None)

    def host_line(self, group: str, line: str) -> None:
        """``pattern [key=value ...] [# comment]``: the words split the way a shell would."""
        try:
            # shlex is slow; a line without quotes, escapes or comments splits the same on whitespace
            words = shlex.split(line, comments=True) if any(c in line for c in "'\"\\#") else line.split()
        except ValueError as exc:
            self.fail(f"cannot split host line '{line}' ({exc}); check its quotes")
        if not words:
            return
        pattern = words[0]
        if pattern.strip() == "---":
            self.fail("host '---' looks like the start of a YAML file; a YAML inventory needs a .yml/.yaml name")
        values = {}
        for word in words[1:]:
            key, sep, text = word.partition("=")
            if not sep:
                self.fail(f"'{word}' after host '{pattern}' is not key=value")
            values[key] = parse_value(text)
        try:
            self.builder.read_hosts(group, pattern, values, ini=True)
        except InventoryError as exc:
            raise InventoryError(str(exc).replace(f"{self.path}: ", f"{self.path}: line {self.line_number}: ", 1)) from None

    def variable(self, line: str) -> tuple:
        """``key = value`` in a [group:vars] section (no shell splitting there)."""
        key, sep, text = line.partition("=")
        if not sep:
            self.fail(f"expected key=value in a :vars section, got '{line}'")
        return key.strip(), parse_value(text.strip())

    def child_line(self, group: str, line: str, pending: dict) -> None:
        match = GROUP_NAME.match(line)
        if not match:
            self.fail(f"expected a group name in [{group}:children], got '{line}'")
        child = match.group(1)
        if child in self.builder.groups:
            self.builder.add_child(self.builder.groups[group], child)
        elif child in pending:
            pending[child][2].append(group)
        else:
            pending[child] = (self.line_number, "children", [group])
