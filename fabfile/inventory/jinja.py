"""Jinja2-templated inventory variables, resolved per host as ansible-core 2.19 resolves them.

A variable whose string holds ``{{``, ``{%`` or ``{#`` is rendered with the host's own
variables (each rendered on first use, so ``a: "{{ b }}"`` follows ``b``), the magic variables
(``inventory_hostname``, ``inventory_hostname_short``, ``group_names``, ``groups``, ``hostvars``,
``inventory_dir``, ``inventory_file``), Jinja2's filters and tests and Ansible's common ones
(``bool``, ``ternary``, ``regex_replace``, ``to_json``, ``b64encode``, ``combine``...). As in 2.19 a
template that is one expression keeps its type (``"{{ 8000 + 80 }}"`` is an int); ``!unsafe``
values and vault-decrypted values are never rendered. A value computed from a secret (a vault
value) is itself a secret. Errors are one line naming the host and the variable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from ..masking import register_secret
from .jinja_env import TemplateFailed, environment
from .model import InventoryError, UnsafeText, is_secret_name
from .vault import Sealed, SecretText, VaultPlain

TEMPLATE_MARKERS = ("{{", "{%", "{#")
PLAIN = (int, float, bool, type(None))
JINJA_LITERALS = frozenset({"true", "false", "none", "True", "False", "None"})
SIMPLE_REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_DEPTH = 100  # nested variable lookups before we call it a loop
# Magic variables whose value is the host's own: a template reading one is rendered per host.
HOST_MAGIC = frozenset({"inventory_hostname", "inventory_hostname_short", "group_names", "hostvars",
                        "inventory_file", "inventory_dir", "groups"})


def is_template(value) -> bool:
    return isinstance(value, str) and not isinstance(value, (UnsafeText, VaultPlain)) and any(
        marker in value for marker in TEMPLATE_MARKERS)


def needs_templating(value) -> bool:
    if isinstance(value, dict):
        return any(needs_templating(item) for item in value.values())
    if isinstance(value, list):
        return any(needs_templating(item) for item in value)
    return is_template(value)


class Templar:
    """Every host's templated variables, computed on first use and cached, across hosts (``hostvars``)."""

    def __init__(self, raw: dict, groups: dict, sources: dict, secret_vars: dict, host_groups: dict):
        self.raw = raw  # host -> {name: value, inline vaults opened, not templated}
        self.groups = groups  # group -> [host names], for ``groups`` and ``group_names``
        self.sources = sources  # host -> the inventory file it first appears in
        self.secret_vars = secret_vars  # host -> names listed in its secret_vars
        self.done: dict = {}  # (host, name) -> value
        self.secret: set = set()  # (host, name) whose value came from a secret
        self.stack: list = []  # (host, name) being rendered, for loops and taint
        self.compiled: dict = {}  # template text -> (template, names it reads or None)
        self.results: dict = {}  # (template text, id of each value it reads) -> (result, from a secret)
        self.environment = None
        self.host_groups = {host: sorted(g for g in names if g != "all") for host, names in host_groups.items()}
        self.scopes: dict = {}  # host -> its _HostScope (made once)
        self.unresolved_hosts: set = set()  # hosts with a variable whose template fails
        self.opening = 0  # > 0 while a SealedTemplate renders: vault values are read (decrypted) then
        self.lock = threading.RLock()
        self.shared = _SharedValues()

    def variables(self, host: str) -> dict:
        """The host's variables, every template rendered (a failing one as an Unresolved value)."""
        found = {}
        for name, raw in self.raw[host].items():
            kind = type(raw)
            # Values with nothing to render (most of them) need no bookkeeping here: value() does it if a
            # template reads them.
            if kind in PLAIN or kind is str and "{" not in raw or not self.shared.kind_of(raw)[1]:
                found[name] = raw
            else:
                found[name] = self.value(host, name)
        return found

    def value(self, host: str, name: str):
        """One variable of one host, rendered once; a caller rendering from a secret becomes secret too."""
        key = (host, name)
        if key not in self.done:
            raw = self.raw[host][name]
            from_secret, templated = self.shared.kind_of(raw)
            if from_secret or is_secret_name(name, self.secret_vars.get(host, ())):
                self.secret.add(key)
            if not templated:
                self.done[key] = raw
            else:
                try:
                    self.done[key] = self.rendered(key, raw)
                except NeedsVault:  # it reads a vault value no task has used yet: rendered when one does
                    self.done[key] = SealedTemplate(self, host, name)
                except TemplateFailed as exc:
                    self.done[key] = Unresolved(self.sources.get(host, ""), host, name, str(exc))
                    self.unresolved_hosts.add(host)
        if self.stack and key in self.secret:
            self.secret.add(self.stack[-1])
        found = self.done[key]
        if self.stack and isinstance(found, Unresolved):
            raise TemplateFailed(found.reason)  # the root cause, named once
        if self.stack and not self.opening and isinstance(found, Sealed):
            raise NeedsVault  # the template reading it stays sealed too
        return found

    def rendered(self, key: tuple, raw):
        if key in self.stack:
            loop = " -> ".join(name for _, name in self.stack[self.stack.index(key):] + [key])
            raise TemplateFailed(f"variables refer to each other in a loop ({loop})")
        if len(self.stack) >= MAX_DEPTH:
            raise TemplateFailed(f"over {MAX_DEPTH} nested variable lookups")
        self.stack.append(key)
        try:
            result = self.render(key[0], raw)
        finally:
            self.stack.pop()
        if key in self.secret:
            result = self.shared.secret_result(result)  # made from a vault value: a secret like it
        return result

    def render(self, host: str, value):
        if isinstance(value, dict):
            return {key: self.render(host, item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.render(host, item) for item in value]
        if not is_template(value):
            return value
        try:
            template, names, parts = self.compile(value)
        except TemplateFailed:
            raise
        except Exception as exc:  # a syntax error: one line
            raise TemplateFailed(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}") from None
        # Hosts sharing a template and the very values it reads (group_vars) share its result.
        tainted_before = self.stack[-1] in self.secret if self.stack else False  # before the lookups taint it
        key = self.result_key(host, value, names)
        if key is not None and key in self.results:
            result, secret = self.results[key]
            if secret and self.stack:
                self.secret.add(self.stack[-1])
            return result
        result = self.substitute(host, parts) if parts is not None else self.jinja_render(host, template)
        if key is not None and not tainted_before:
            self.results[key] = (result, bool(self.stack) and self.stack[-1] in self.secret)
        return result

    def result_key(self, host: str, text: str, names):
        """(text, identity of each value it reads), or None when the result is the host's own or a name is undefined."""
        if names is None:
            return None
        own, known = self.raw[host], self.jinja_globals()
        if any(name not in own and name not in known for name in names):
            return None
        return (text, *(id(self.lookup(host, name)) for name in names))

    def jinja_render(self, host: str, template):
        from jinja2 import TemplateError, Undefined, UndefinedError

        try:
            context = template.new_context(self.scope(host), shared=True)
            result = self.environment.concat(template.root_render_func(context))
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return result
        except TemplateFailed:
            raise
        except UndefinedError as exc:
            raise TemplateFailed(f"{exc.message}; define it or use | default(...)") from None
        except TemplateError as exc:
            raise TemplateFailed(f"{type(exc).__name__}: {exc.message or exc}") from None
        except RecursionError:
            raise TemplateFailed("the template nests too deeply") from None
        except Exception as exc:  # a filter given the wrong type, a division by zero...: still one line
            raise TemplateFailed(f"{type(exc).__name__}: {exc}") from None


    def compile(self, text: str) -> tuple:
        """(template, the names it reads, parts) once per text. names is None when the result is the
        host's own (it reads a magic variable such as inventory_hostname or hostvars); parts, for a
        text made only of literal text and ``{{ name }}`` (the common case), lets ``substitute`` do
        what Jinja would without Jinja's per-render cost."""
        if text not in self.compiled:
            pieces = SIMPLE_REFERENCE.split(text)
            if all(not any(m in piece for m in TEMPLATE_MARKERS) for piece in pieces[::2]) and \
                    not any(piece in JINJA_LITERALS for piece in pieces[1::2]):
                parts = [(index % 2 == 1, piece) for index, piece in enumerate(pieces) if piece or index % 2]
                names = sorted(set(pieces[1::2]))
                per_host = any(name in HOST_MAGIC for name in names)
                self.compiled[text] = (None, None if per_host else names, parts)  # no Jinja needed (nor imported)
            else:
                from jinja2 import meta

                if self.environment is None:
                    self.environment = environment()
                names = sorted(meta.find_undeclared_variables(self.environment.parse(text)))
                per_host = any(name in HOST_MAGIC for name in names)
                self.compiled[text] = (self.environment.from_string(text), None if per_host else names, None)
        return self.compiled[text]

    def substitute(self, host: str, parts: list):
        """Literal text and ``{{ name }}`` references: one reference keeps its value's type, several join as text."""
        scope = self.scope(host)
        values = []
        for is_name, piece in parts:
            if not is_name:
                values.append(piece)
            elif piece in scope:
                values.append(scope[piece])
            else:
                raise TemplateFailed(f"'{piece}' is undefined; define it or use | default(...)")
        if len(values) == 1:
            return values[0]
        return "".join(str(value) for value in values)

    def lookup(self, host: str, name: str):
        """What a template of ``host`` gets for ``name`` (its variable, a global, or nothing)."""
        if name in self.raw[host]:
            return self.value(host, name)
        return self.jinja_globals().get(name)

    def jinja_globals(self) -> dict:
        """Jinja's globals (range, dict...) and ours; {} while no template has needed Jinja."""
        return self.environment.globals if self.environment is not None else {}

    def scope(self, host: str) -> "_HostScope":
        if host not in self.scopes:
            self.scopes[host] = _HostScope(self, host)
        return self.scopes[host]

    def magic(self, host: str) -> dict:
        source = self.sources.get(host) or ""
        return {
            "inventory_hostname": host,
            "inventory_hostname_short": host.split(".")[0],
            "group_names": self.host_groups.get(host, []),
            "groups": self.groups,
            "hostvars": _HostVars(self),
            "inventory_file": source,
            "inventory_dir": source.rsplit("/", 1)[0] if "/" in source else "",
        }


class _SharedValues:
    """What the templar works out once per value object rather than once per host: hosts in the same groups
    share their group vars' objects, and hosts sharing a template and the values it reads share its result.
    Each memo keeps the object it describes, so its id cannot be reused by another."""

    def __init__(self):
        self.kinds: dict = {}  # id of a raw value -> (the value, holds a secret, needs templating)
        self.secret_results: dict = {}  # id of a result made from a secret -> (it, it as a secret)

    def kind_of(self, raw) -> tuple:
        """(does ``raw`` hold a secret (a vault value), does it need templating)."""
        if type(raw) is str:
            return False, is_template(raw)
        known = self.kinds.get(id(raw))
        if known is None or known[0] is not raw:
            templated = isinstance(raw, (dict, list)) and needs_templating(raw)
            known = self.kinds[id(raw)] = (raw, _holds_plain(raw), templated)  # raw kept: its id stays its own
        return known[1:]

    def secret_result(self, result):
        """A result made from a secret: registered for masking, and text a SecretText (once per result object)."""
        known = self.secret_results.get(id(result))
        if known is None or known[0] is not result:
            _register(result)
            known = self.secret_results[id(result)] = (result, SecretText(result) if isinstance(result, str) else result)
        return known[1]


class NeedsVault(TemplateFailed):
    """Raised inside rendering when a template reads a still-sealed vault value (see ``SealedTemplate``)."""


class SealedTemplate(Sealed):
    """A variable whose template reads a vault value: rendered, and so the vault decrypted, only when a task
    reads it (``Sealed``), then kept; a template error then is the one line naming host and variable."""

    def __init__(self, templar: Templar, host: str, name: str):
        self.templar, self.host, self.name = templar, host, name
        self.raw = templar.raw[host][name]  # the text as written (inventory.show prints it)
        self.result = None
        self.rendered = False

    def open(self):
        with self.templar.lock:  # a play's threads may read it at once; the templar renders one at a time
            if not self.rendered:
                templar = self.templar
                templar.opening += 1
                try:
                    templar.done.pop((self.host, self.name), None)
                    self.result = templar.value(self.host, self.name)
                finally:
                    templar.opening -= 1
                self.rendered = True
        if isinstance(self.result, Unresolved):
            raise self.result.error
        return self.result

    def __repr__(self):
        return f"<template reading a vault value: {self.raw!r}>"


class Unresolved:
    """A variable whose template fails, as Ansible would fail when a task uses it: ignored while nothing
    reads it; reading it as text, a number or a collection (a role's template, a setting) raises the one
    line naming host and variable. ``inventory.show`` prints the reason."""

    def __init__(self, source: str, host: str, name: str, reason: str):
        self.source, self.host, self.name, self.reason = source, host, name, reason

    @property
    def error(self) -> InventoryError:
        return InventoryError(f"{self.source}: host '{self.host}': cannot template variable '{self.name}': {self.reason}")

    def _fail(self, *args, **kwargs):
        raise self.error

    __str__ = __format__ = __int__ = __float__ = __index__ = __bool__ = __iter__ = __len__ = _fail
    __getitem__ = __contains__ = __add__ = __radd__ = __mod__ = _fail

    @property
    def unresolved_reason(self) -> str:
        """What the variable schema reports for a variable a role reads (one line)."""
        return self.reason

    def __repr__(self):
        return f"<cannot template: {self.reason}>"


class _HostScope(Mapping):
    """What a template of one host sees: its variables (templated on use) over the magic variables."""

    def __init__(self, templar: Templar, host: str):
        self.templar, self.host = templar, host
        self.magic = templar.magic(host)

    def __getitem__(self, name):
        if name in self.templar.raw[self.host]:
            return self.templar.value(self.host, name)
        if name in self.magic:
            return self.magic[name]
        return self.templar.jinja_globals()[name]  # range, dict, lookup (refused)...

    def __contains__(self, name):
        return name in self.templar.raw[self.host] or name in self.magic or name in self.templar.jinja_globals()

    def __iter__(self):
        return iter({**self.magic, **self.templar.raw[self.host]})

    def __len__(self):
        return len(set(self.magic) | set(self.templar.raw[self.host]))


class _HostVars(Mapping):
    """``hostvars``: every host's variables, templated on use."""

    def __init__(self, templar: Templar):
        self.templar = templar

    def __getitem__(self, host):
        if host not in self.templar.raw:
            raise KeyError(host)
        return self.templar.scope(host)

    def __iter__(self):
        return iter(self.templar.raw)

    def __len__(self):
        return len(self.templar.raw)


def _holds_plain(value) -> bool:
    if type(value) is str:
        return False
    if isinstance(value, dict):
        return any(_holds_plain(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_plain(item) for item in value)
    return isinstance(value, (SecretText, Sealed))


def _register(value) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _register(item)
    elif isinstance(value, list):
        for item in value:
            _register(item)
    elif value is not None and not isinstance(value, bool):
        register_secret(value)
