"""Reading the YAML safely: refused tags, bounded nesting and aliases, one line per problem."""

from __future__ import annotations

import yaml

from .model import InventoryError, UnsafeText
from .vault import VaultText

# Bounds that keep hostile input to one error line instead of a hang or a traceback.
MAX_NESTING = 64  # nested YAML mappings/lists
MAX_NODES = 1_000_000  # YAML values once aliases are expanded
MAX_HOSTS = 100_000  # hosts in one inventory (after range expansion)


class _Refused(Exception):
    """Raised inside the YAML constructor; becomes an InventoryError with the file name."""


class _InventoryLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML plus Ansible's tags: ``!unsafe`` (never templated), ``!vault`` (kept encrypted until used)."""

    source_path = ""


def _unsafe(value):
    """Every string inside an ``!unsafe`` value becomes UnsafeText, as Ansible marks them."""
    if isinstance(value, str):
        return UnsafeText(value)
    if isinstance(value, list):
        return [_unsafe(item) for item in value]
    if isinstance(value, dict):
        return {key: _unsafe(item) for key, item in value.items()}
    return value


def _construct_unsafe(loader, node):
    """``!unsafe``: a value Ansible never templates (``{{`` stays literal)."""
    if isinstance(node, yaml.ScalarNode):
        return UnsafeText(loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return _unsafe(loader.construct_sequence(node, deep=True))
    return _unsafe(loader.construct_mapping(node, deep=True))


def _construct_vault(loader, node):
    """``!vault |`` text: decrypted only when a host that uses it is resolved (see vault)."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Refused(f"line {node.start_mark.line + 1}: !vault must tag the text ansible-vault encrypt_string prints")
    return VaultText(loader.construct_scalar(node), loader.source_path, node.start_mark.line + 1)


_InventoryLoader.add_constructor("!unsafe", _construct_unsafe)
_InventoryLoader.add_constructor("!vault", _construct_vault)


def read_text(path: str) -> str:
    """An inventory file's text, or one InventoryError line (missing, unreadable, not UTF-8)."""
    from ..files import read_named_file

    return read_named_file(path, InventoryError, "inventory file", "pass --inventory PATH")


def _read_yaml(path: str):
    """The file's YAML data, or one InventoryError line (missing, unreadable, bad syntax, hostile)."""
    return parse_yaml(path, read_text(path))


def read_vars_text(path: str, text: str):
    """A group_vars/host_vars file's YAML data, with the inventory's tags and bounds."""
    return parse_yaml(path, text)


def parse_yaml(path: str, text: str):
    """YAML text -> data, or one InventoryError line naming ``path``."""
    loader = _InventoryLoader(text)
    loader.source_path = path
    try:
        data = loader.get_single_data()
    except _Refused as exc:
        raise InventoryError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}:{where}: YAML syntax error: {problem}; fix the file") from None
    except RecursionError:
        raise InventoryError(f"{path}: YAML nested too deeply (over {MAX_NESTING} levels); flatten it") from None
    finally:
        loader.dispose()
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
