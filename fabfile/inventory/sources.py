"""Inventory sources as Ansible's InventoryManager walks them: files, folders, several of each.

``--inventory`` is repeatable and takes comma-separated paths (the way ``inventory = a,b`` in
ansible.cfg reads; Ansible's own ``-i a,b`` would be a list of host names, which we do not
take). A folder is every file in it, sorted, recursively, minus Ansible's ignore rules; its
``group_vars/`` and ``host_vars/`` are read beside the folder's files. A file's are read from
the folder holding it.
"""

from __future__ import annotations

import os
import re

from .model import InventoryError

# ansible.inventory.manager.IGNORED with the default INVENTORY_IGNORE_EXTS (REJECT_EXTS + .orig .cfg .retry).
IGNORED_EXTENSIONS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
IGNORED = re.compile(
    "|".join([r"^\.", "^host_vars$", "^group_vars$", "^vars_plugins$"] + [re.escape(e) + "$" for e in IGNORED_EXTENSIONS])
)
MAX_FILES = 10_000  # files in one inventory folder tree; more is a mistake (a whole disk?)


def split_sources(specs) -> list:
    """``["a,b", "c"]`` (or one string) -> ["a", "b", "c"]: repeated flags and commas, blanks dropped."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    found = []
    for spec in specs or ():
        found += [part.strip() for part in os.fspath(spec).split(",") if part.strip()]
    return found


def inventory_files(source: str) -> list:
    """The files of one source, in the order Ansible parses them; one error line for a missing path."""
    if not os.path.exists(source):
        raise InventoryError(f"{source}: inventory file not found; pass --inventory PATH (a file or a folder)")
    if not os.path.isdir(source):
        return [source]
    found: list = []
    _walk(source, found, set())
    return found


def _walk(folder: str, found: list, seen: set) -> None:
    """Sorted entries, recursively, skipping what Ansible skips; symlink loops visited once."""
    real = os.path.realpath(folder)
    if real in seen:
        return
    seen.add(real)
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InventoryError(f"{folder}: cannot read inventory folder ({exc.strerror}); check its permissions") from None
    for name in names:
        if IGNORED.search(name):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            _walk(path, found, seen)
        elif os.path.exists(path):
            found.append(path)
            if len(found) > MAX_FILES:
                raise InventoryError(f"{folder}: more than {MAX_FILES} files in the inventory folder; point at a smaller one")


def vars_base(source: str) -> str:
    """Where a source's group_vars/ and host_vars/ live: the folder itself, else the file's folder."""
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    return os.path.realpath(folder)
