"""``group_vars/`` and ``host_vars/`` beside each inventory source, found as Ansible's host_group_vars plugin finds them.

For an entity ``NAME`` in ``<base>/group_vars`` (or ``host_vars``): the first of ``NAME`` (a file
or a folder), ``NAME.yml``, ``NAME.yaml``, ``NAME.json`` that exists; a folder contributes every
file in it with no extension or one of those three, sorted, recursively, hidden files and ``~``
backups skipped, later files replacing earlier keys. Empty files add nothing. Each file is read once.
"""

from __future__ import annotations

import json
import os

from .model import InventoryError
from .vault import is_vault_text, secret_values
from .yaml_reader import read_vars_text

EXTENSIONS = (".yml", ".yaml", ".json")


class VarsFiles:
    """The vars files of every source's base folder, read on first use and cached."""

    def __init__(self, bases: list, decrypt=None):
        self.bases = []
        for base in bases:
            if base not in self.bases:
                self.bases.append(base)
        self.decrypt = decrypt  # turns a vault-encrypted file's text into its plain text (see vault)
        self.read: dict = {}  # path -> its vars
        self.found: dict = {}  # (folder, name) -> [paths]
        self.listed: dict = {}  # folder -> the names in it (one listdir per folder, not four stats per host)
        self.merged: dict = {}  # (base, kind, name) -> merged vars
        self.stemmed: dict = {}  # folder -> its names, and those with a vars extension without it

    def groups(self, names: list) -> list:
        """Vars of ``all`` from every base, then of the other groups (base by base, in ``names`` order)."""
        layers = [self.vars_of(base, "group_vars", "all") for base in self.bases]
        for base in self.bases:
            layers += [self.vars_of(base, "group_vars", name) for name in names if name != "all"]
        return [layer for layer in layers if layer]

    def host(self, name: str) -> list:
        """Vars of host ``name`` from every base (most hosts have no file: one look at each folder's listing)."""
        layers = []
        for base in self.bases:
            if "/" in name or name in self.stems(os.path.join(base, "host_vars")):
                layer = self.vars_of(base, "host_vars", name)
                if layer:
                    layers.append(layer)
        return layers

    def vars_of(self, base: str, kind: str, name: str) -> dict:
        """One entity's vars from one base folder (names starting with '/' are skipped, as in Ansible)."""
        if not name or name.startswith(os.sep):
            return {}
        key = (base, kind, name)
        if key not in self.merged:
            merged: dict = {}
            for path in self.files(os.path.join(base, kind), name):
                merged.update(self.file_vars(path))
            self.merged[key] = merged
        return self.merged[key]

    def files(self, folder: str, name: str) -> list:
        key = (folder, name)
        if key not in self.found:
            names = self.listing(folder)
            candidates = [name] + [name + ext for ext in EXTENSIONS]
            self.found[key] = _find(folder, name) if ("/" in name or any(c in names for c in candidates)) else []
        return self.found[key]

    def listing(self, folder: str) -> set:
        if folder not in self.listed:
            self.listed[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        return self.listed[folder]

    def stems(self, folder: str) -> set:
        """The names in ``folder`` with and without a vars extension: NAME is there as NAME, NAME.yml... if in it."""
        if folder not in self.stemmed:
            names = self.listing(folder)
            self.stemmed[folder] = names | {name[:-len(ext)] for name in names for ext in EXTENSIONS if name.endswith(ext)}
        return self.stemmed[folder]

    def file_vars(self, path: str) -> dict:
        if path not in self.read:
            self.read[path] = _read_vars_file(path, self.decrypt)
        return self.read[path]


def _find(folder: str, name: str) -> list:
    """DataLoader.find_vars_files: NAME (file or folder) first, then NAME.yml, .yaml, .json."""
    base = os.path.join(folder, name)
    for candidate in [base] + [base + ext for ext in EXTENSIONS]:
        if os.path.isdir(candidate):
            return _folder_files(candidate)
        if os.path.exists(candidate):
            return [candidate]
    return []


def _folder_files(folder: str, depth: int = 0) -> list:
    found = []
    if depth > 32:
        raise InventoryError(f"{folder}: vars folders nested over 32 levels (a symlink loop?); flatten them")
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InventoryError(f"{folder}: cannot read vars folder ({exc.strerror}); check its permissions") from None
    for name in names:
        if name.startswith(".") or name.endswith("~"):
            continue
        path = os.path.join(folder, name)
        ext = os.path.splitext(name)[1]
        if os.path.isdir(path) and not ext:
            found += _folder_files(path, depth + 1)
        elif os.path.isfile(path) and (not ext or ext in EXTENSIONS):
            found.append(path)
    return found


def _read_vars_file(path: str, decrypt) -> dict:
    """A vars file's mapping (JSON first, then YAML, as Ansible's loader does); {} when empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise InventoryError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read vars file ({exc.strerror}); check its permissions") from None
    encrypted = is_vault_text(text)
    if encrypted:
        text = decrypt(text, path)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = read_vars_text(path, text)
    if not data:  # Ansible skips empty files (and any other false value)
        return {}
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: a vars file must be a mapping of variables, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise InventoryError(f"{path}: variable name {key!r} is not a string; quote it")
    return secret_values(data) if encrypted else data
