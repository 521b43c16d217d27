"""Connection settings: Ansible's connection variables mapped onto the names our transports read."""

from __future__ import annotations

import os
import re
import shlex

from .model import CONNECTION_ALIASES, DEFAULT_CONNECTION, InventoryError

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
    # Privilege escalation once logged in (Ansible's become): sudo only, without a password.
    "become": ("become", "ansible_become"),
    "become_user": ("become_user", "ansible_become_user"),
    "become_method": ("become_method", "ansible_become_method"),
}
BECOME_METHODS = ("sudo",)
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
# Every variable the settings above read: their templates must resolve before a task targets the host.
CONNECTION_VARIABLES = frozenset(
    {"connection", "ansible_connection", "ansible_incus_project", *HOST_KEY_CHECKING, *SSH_ARG_VARS}
    | {name for settings in SETTINGS.values() for names in settings.values() for name in names}
)
TRUE_WORDS = {"yes", "on", "1", "true", "y", "t"}
FALSE_WORDS = {"no", "off", "0", "false", "n", "f"}


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
        self.layers = (("cli", cli_vars), ("inventory", inventory_vars)) if cli_vars else (("inventory", inventory_vars),)

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
                found[layer][setting] = self.boolean(name, value) if setting == "become" \
                    else self.checked(setting, name, value)
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
            if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,5}", str(value).strip()) or not 0 < int(value) < 65536:
                self.fail(f"{name} {value!r} is not a port number (1-65535)")
            return int(value)
        if setting == "become_method" and value not in BECOME_METHODS:
            self.fail(f"{name} {value!r} is not supported; use sudo (passwordless, NOPASSWD)")
        if setting == "become_user" and not re.fullmatch(r"[a-z_][a-z0-9_-]*", str(value)):
            self.fail(f"{name} {value!r} is not a user name")
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
