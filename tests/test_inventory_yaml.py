"""The YAML reader's direct walk (texts without anchors) gives exactly what the safe constructor gives:
the same data, of the same types, and for bad input the same one error line."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabfile.inventory import InventoryError, yaml_reader

TAGGED = {
    "merge_key": "base: {a: 1}\nall:\n  vars:\n    x:\n      b: 2\n      <<: {a: 3, c: 4}\n",
    "value_key": "all:\n  vars:\n    '=': 1\n    x: {=: 2}\n",
    "unsafe": "all:\n  vars:\n    u: !unsafe '{{ x }}'\n    m: !unsafe {a: '{{ b }}', c: [d, '{{ e }}']}\n",
    "vault": "all:\n  vars:\n    v: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n",
    "vault_on_mapping": "all:\n  vars:\n    v: !vault {a: 1}\n",
    "scalars": "a: [1, 0x1f, 0o17, 1_000, 1:30, .5, -.inf, .nan, yes, Off, ~, 2024-01-02, 2024-01-02 10:00:00]\n",
    "binary_and_set": "a: !!binary aGVsbG8=\nb: !!set {x, y}\nc: !!omap [{k: v}]\nd: !!str 12\n",
    "complex_key": "? [a, b]\n: 1\n",
    "duplicate_keys": "a: 1\na: 2\nb: {c: 1, c: 3}\n",
    "bad_tag_deep_and_shallow": "a:\n  b:\n    c: !nope 1\nd: !!int x\n",
    "str_tag_on_mapping": "a: !!str {b: 1}\n",
    "nested_65": "x: " + "[" * 65 + "]" * 65 + "\n",
    "nested_63": "x: " + "[" * 63 + "]" * 63 + "\n",
    "deep_block": "".join("  " * i + f"k{i}:\n" for i in range(70)),
    "empty": "",
    "comment_only": "# nothing\n",
    "two_documents": "a: 1\n---\nb: 2\n",
}


def outcome(text: str):
    """(data or error line, the types of every value in it) as parse_yaml reads ``text``."""
    try:
        data = yaml_reader.parse_yaml("inv.yml", text)
    except InventoryError as exc:
        return "error", str(exc)
    return repr(data), types_of(data)


def types_of(value):
    if isinstance(value, dict):
        return [(type(key), types_of(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [types_of(item) for item in value]
    return type(value)


def safe_constructor_outcome(monkeypatch, text: str):
    """The same, built by the safe constructor alone and with the full alias check."""
    construct, check_shape = yaml_reader._construct, yaml_reader._check_shape
    with monkeypatch.context() as patched:
        patched.setattr(yaml_reader, "_construct", lambda loader, node, plain: construct(loader, node, False))
        patched.setattr(yaml_reader, "_check_shape", lambda path, data, aliases=True: check_shape(path, data, True))
        return outcome(text)


@pytest.mark.parametrize("case", sorted(TAGGED))
def test_direct_walk_matches_the_safe_constructor(monkeypatch, case):
    assert outcome(TAGGED[case]) == safe_constructor_outcome(monkeypatch, TAGGED[case])


def test_deep_nesting_without_anchors_is_still_refused():
    with pytest.raises(InventoryError, match="nested too deeply"):
        yaml_reader.parse_yaml("inv.yml", TAGGED["nested_65"])


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                    st.sampled_from(["yes", "0x10", "1:20", "2020-02-02", "~", "<<", "=", ".inf"]))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(SCALARS), inner, max_size=4)), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TREES, st.booleans())
def test_random_documents(monkeypatch, tree, flow):
    text = yaml.safe_dump(tree, default_flow_style=flow)
    assert outcome(text) == safe_constructor_outcome(monkeypatch, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ab: -[]{}*!|>\n'\"#%@`,?<=019.~", max_size=60))
def test_random_text(monkeypatch, text):
    assert outcome(text) == safe_constructor_outcome(monkeypatch, text)


@pytest.mark.parametrize("value", ["2024-13-45", "!!int x", "!!float y", "2024-02-30 10:00:00"])
def test_a_typed_scalar_that_is_not_one_is_one_line(tmp_path, value):
    """Ansible refuses these too ("YAML parsing failed"); here they were a ValueError traceback."""
    path = tmp_path / "hosts.yml"
    path.write_text(f"all:\n  hosts:\n    h1:\n      d: {value}\n")
    with pytest.raises(InventoryError, match=r"hosts.yml: YAML value cannot be read \(.+\); fix the file"):
        yaml_reader.parse_yaml(str(path), path.read_text())
