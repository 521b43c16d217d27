"""Reading the YAML safely: refused tags, bounded nesting and aliases, one line per problem."""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

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


STR_TAG, MAP_TAG, SEQ_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
KEY_TAGS_NEEDING_FLATTENING = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")  # << and =


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
        data = _construct(loader, loader.get_single_node(), plain="&" not in text)
    except _Refused as exc:
        raise InventoryError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}:{where}: YAML syntax error: {problem}; fix the file") from None
    except (ValueError, OverflowError) as exc:  # a typed scalar that is not one (2024-13-45, !!int x): Ansible refuses too
        raise InventoryError(f"{path}: YAML value cannot be read ({exc}); fix the file") from None
    except RecursionError:
        raise InventoryError(f"{path}: YAML nested too deeply (over {MAX_NESTING} levels); flatten it") from None
    finally:
        loader.dispose()
    _check_shape(path, data, aliases="&" in text or 2 * len(text) >= MAX_NODES)
    return data


def _construct(loader, node, plain: bool):
    """The document's data, as the safe constructor builds it. A text without anchors (no ``&``, so no node
    appears twice) takes a direct walk (``_plain_data``); anything it meets that fails goes through the
    safe constructor again from the start, so errors are the ones (and in the order) it reports."""
    if node is None:
        return None
    if plain:
        try:
            return _plain_data(loader, node)
        except Exception:  # noqa: BLE001 - the safe constructor below reports it (or the shape check does)
            loader.constructed_objects, loader.recursive_objects, loader.state_generators = {}, {}, []
            loader.deep_construct = False
    return loader.construct_document(node)


def _plain_data(loader, node):
    """Plain mappings, lists and strings directly; every other node (numbers, booleans, ``!unsafe``, ``!vault``,
    merge keys...) through the safe constructor's own function for it."""
    kind, tag = type(node), node.tag
    if kind is ScalarNode and tag == STR_TAG:
        return node.value
    if kind is SequenceNode and tag == SEQ_TAG:
        return [_plain_data(loader, item) for item in node.value]
    if kind is MappingNode and tag == MAP_TAG and all(
            type(key) is ScalarNode and key.tag not in KEY_TAGS_NEEDING_FLATTENING for key, _ in node.value):
        mapping = {}
        for key_node, value_node in node.value:
            mapping[_plain_data(loader, key_node)] = _plain_data(loader, value_node)
        return mapping
    return loader.construct_object(node, deep=True)


def _check_shape(path: str, data, aliases: bool = True) -> None:
    """Refuse self-referencing aliases, deep nesting and alias bombs, so later code may recurse freely.

    ``aliases`` False: the text has no anchor (so no alias) and is too short to hold MAX_NODES values
    (each takes at least one character), so only the nesting can be wrong."""
    if not aliases:
        return _check_depth(path, data)
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


def _check_depth(path: str, data) -> None:
    """Refuse nesting over MAX_NESTING levels (the check above, for data in which no value appears twice)."""
    pending = [(data, 0)] if isinstance(data, (dict, list)) else []
    while pending:
        node, depth = pending.pop()
        if depth >= MAX_NESTING:
            raise InventoryError(f"{path}: YAML nested too deeply (over {MAX_NESTING} levels); flatten it")
        pending.extend((value, depth + 1) for value in (node.values() if isinstance(node, dict) else node)
                       if isinstance(value, (dict, list)))
