"""The resolved inventory: ``Host``, ``Inventory``, the one error type, secret names."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..masking import is_secret_key, mask_data, pieces_of, register_secret, secret_values

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
GROUP_SECTIONS = ("vars", "children", "hosts")
MASK = "********"


class InventoryError(Exception):
    """A bad inventory or selection; the message is the one line shown to the user."""


class UnsafeText(str):
    """A string tagged ``!unsafe``: Ansible never templates it, neither do we."""


class SecretText(str):
    """A string from Ansible Vault (a vault-encrypted file, or templated from a vault value): a secret
    (masked everywhere), templated like any other value."""


@dataclass
class Host:
    name: str
    inventory_vars: dict  # ansible_vars plus our normalised connection settings
    groups: list  # "all", then every group of the host in precedence order
    cli_vars: dict = field(default_factory=dict)
    ansible_vars: dict = field(default_factory=dict)  # exactly what ansible-inventory --list shows
    # Why no task may target this host (a connection we do not implement, a template or vault
    # that fails...): one error line. Other hosts stay usable; inventory.show marks this one.
    problem: str | None = None

    @property
    def vars(self) -> dict:
        """Inventory variables with the command line's ``--set`` values on top."""
        return {**self.inventory_vars, **self.cli_vars}

    def vars_with(self, defaults: dict) -> dict:
        """The host's variables layered over a role's defaults."""
        return {**defaults, **self.inventory_vars, **self.cli_vars}

    def get(self, name: str, default=None):
        """``self.vars.get(name, default)`` without merging the two layers (summaries read a few names of every host)."""
        return self.cli_vars[name] if name in self.cli_vars else self.inventory_vars.get(name, default)

    @property
    def connection(self) -> str:
        """incus, ssh or local."""
        return self.get("connection", DEFAULT_CONNECTION)

    @property
    def address(self) -> str | None:
        """The address set in the inventory (HAProxy server lines need one); None when unset."""
        return self.get("address")

    @property
    def ssh_address(self) -> str:
        """Where ssh connects: the address, else the inventory name (as Ansible does)."""
        return self.address or self.name

    def __repr__(self):
        return f"Host({self.name!r})"


def is_secret_name(name, secret_vars=()) -> bool:
    """True for variables whose value must never be shown (the one rule of ``masking``, plus ``secret_vars``)."""
    return is_secret_key(name, secret_vars)


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
            return self.usable(chosen)
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
        return self.usable(narrowed)

    @staticmethod
    def usable(hosts: list) -> list:
        """``hosts`` unchanged, or the first one's problem as the one error line (``--limit`` can leave it out)."""
        for host in hosts:
            if host.problem:
                raise InventoryError(f"{host.problem} (--limit can leave '{host.name}' out)")
        return hosts


def masked(values, secret_vars=()):
    """A copy of ``values`` with every secret-named entry (at any depth) replaced by ``********``."""
    return mask_data(values, secret_vars)


def register_secrets(hosts) -> None:
    """Register for masking every value held under a secret name (any host, any depth, the host's
    ``secret_vars`` too): ``masking.secret_values`` host by host, but a mapping or list that many hosts
    share (group vars) is scanned once per list of ``secret_vars``, not once per host."""
    found: set = set()
    secret: dict = {}  # id of a secret_vars list -> {name: is it a secret name}
    scanned: dict = {}  # id of a secret_vars list -> {id of a shared value: its secret pieces}
    for host in hosts:
        values = host.vars
        listed = values.get("secret_vars")
        extra = listed if isinstance(listed, (list, tuple)) else ()
        secret_names, scanned_values = secret.setdefault(id(extra), {}), scanned.setdefault(id(extra), {})
        for key, item in values.items():
            is_secret = secret_names.get(key)
            if is_secret is None:
                is_secret = secret_names[key] = is_secret_key(key, extra)
            if is_secret:
                found.update(pieces_of(item))
            elif isinstance(item, (dict, list, tuple)):
                if id(item) not in scanned_values:
                    scanned_values[id(item)] = secret_values(item, extra)
                found.update(scanned_values[id(item)])
    register_secret(sorted(found))
