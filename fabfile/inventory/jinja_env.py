"""The Jinja2 environment of inventory templates: native types as in ansible-core 2.19, Ansible's common
filters and tests (``bool``, ``ternary``, ``regex_replace``, ``to_json``, ``combine``...), lookups refused."""

from __future__ import annotations

import base64
import json
import re
import shlex
from itertools import chain, islice

class TemplateFailed(Exception):
    """Raised inside rendering; becomes one line naming host and variable."""


def _native_concat(values):
    """A one-node template keeps its value's type; several nodes join as text (no literal_eval, as in 2.19)."""
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        return head[0]
    return "".join(str(value) for value in chain(head, values))


def _bool(value):
    if isinstance(value, bool) or value is None:
        return bool(value)
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def _ternary(value, true_value, false_value, none_value=None):
    if value is None and none_value is not None:
        return none_value
    return true_value if value else false_value


def _combine(*dicts, recursive=False):
    result: dict = {}
    for item in dicts:
        for mapping in item if isinstance(item, list) else [item]:
            for key, value in mapping.items():
                if recursive and isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                    result[key] = _combine(result[key], value, recursive=True)
                else:
                    result[key] = value
    return result


def _regex_search(value, pattern, *groups, ignorecase=False, multiline=False):
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    match = re.search(pattern, str(value), flags)
    if not match:
        return None
    if not groups:
        return match.group(0)
    return [match.group(int(g[1:]) if str(g).startswith("\\") else g) for g in groups]


def _mandatory(value, message=None):
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        raise TemplateFailed(message or f"mandatory variable {value._undefined_name!r} is not defined")
    return value


FILTERS = {
    "bool": _bool,
    "ternary": _ternary,
    "to_json": lambda value, **kw: json.dumps(value, **kw),
    "to_nice_json": lambda value, indent=4, **kw: json.dumps(value, indent=indent, sort_keys=True, **kw),
    "from_json": lambda value: json.loads(value),
    "to_yaml": lambda value, **kw: __import__("yaml").safe_dump(value, **kw),
    "to_nice_yaml": lambda value, indent=4, **kw: __import__("yaml").safe_dump(value, indent=indent, **kw),
    "from_yaml": lambda value: __import__("yaml").safe_load(value),
    "b64encode": lambda value, encoding="utf-8": base64.b64encode(str(value).encode(encoding)).decode(),
    "b64decode": lambda value, encoding="utf-8": base64.b64decode(str(value)).decode(encoding),
    "regex_replace": lambda value, pattern="", replacement="", ignorecase=False, multiline=False, count=0: re.sub(
        pattern, replacement, str(value), count=count, flags=(re.I if ignorecase else 0) | (re.M if multiline else 0)),
    "regex_search": _regex_search,
    "regex_findall": lambda value, pattern, ignorecase=False, multiline=False: re.findall(
        pattern, str(value), (re.I if ignorecase else 0) | (re.M if multiline else 0)),
    "regex_escape": lambda value: re.escape(str(value)),
    "quote": lambda value: shlex.quote(str(value)),
    "basename": lambda value: str(value).rstrip("/").rsplit("/", 1)[-1] if "/" in str(value) else str(value),
    "dirname": lambda value: str(value).rsplit("/", 1)[0] if "/" in str(value) else "",
    "combine": _combine,
    "dict2items": lambda value, key_name="key", value_name="value": [
        {key_name: k, value_name: v} for k, v in value.items()],
    "items2dict": lambda value, key_name="key", value_name="value": {
        item[key_name]: item[value_name] for item in value},
    "flatten": lambda value, levels=None: _flatten(value, levels),
    "mandatory": _mandatory,
    "split": lambda value, separator=None, maxsplit=-1: str(value).split(separator, maxsplit),
    "type_debug": lambda value: type(value).__name__,
}


def _flatten(value, levels):
    result = []
    for item in value:
        if isinstance(item, list) and (levels is None or levels > 0):
            result.extend(_flatten(item, None if levels is None else levels - 1))
        else:
            result.append(item)
    return result


def _regex_test(flavour):
    def test(value, pattern="", ignorecase=False, multiline=False):
        flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
        return bool(getattr(re, flavour)(pattern, str(value), flags))
    return test


TESTS = {"match": _regex_test("match"), "search": _regex_test("search"), "regex": _regex_test("search"),
         "truthy": lambda value: bool(value), "falsy": lambda value: not value}


def environment():
    from jinja2 import StrictUndefined
    from jinja2.nativetypes import NativeCodeGenerator, NativeEnvironment

    class CodeGenerator(NativeCodeGenerator):
        def _output_const_repr(self, group):
            """A constant-folded ``{{ 8000 + 80 }}`` keeps its type too; several pieces join as text."""
            return repr(group[0]) if len(group) == 1 else repr("".join(str(value) for value in group))

    class Environment(NativeEnvironment):
        code_generator_class = CodeGenerator
        concat = staticmethod(_native_concat)

    environment = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters.update(FILTERS)
    environment.tests.update(TESTS)
    environment.globals.update(lookup=_no_lookup, query=_no_lookup, q=_no_lookup)
    return environment


def _no_lookup(plugin="", *args, **kwargs):
    raise TemplateFailed(f"lookup('{plugin}', ...) is not supported here (Ansible runs lookup plugins on its "
                         "controller); write the value, or keep the variable out of what our tasks read")
