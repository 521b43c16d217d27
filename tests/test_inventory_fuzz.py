"""Hostile and random input: the loader only ever returns an Inventory or raises one InventoryError line."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabfile.inventory import Inventory, InventoryError, load_inventory

NAMES = st.sampled_from([
    "all", "ungrouped", "vars", "hosts", "children", "web", "db", "h1", "h2", "web[1:3]", "db-[a:c]", "x:22",
    "[2001:db8::1]:22", "ansible_connection", "ansible_host", "ansible_port", "ansible_group_priority",
    "ansible_ssh_common_args", "connection", "address", "a]b[1:2]", "", "n[01:2]", "n[1:2:0]",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False, allow_infinity=False),
    NAMES, st.text(max_size=12), st.sampled_from(["ssh", "local", "community.general.incus", "winrm", "-J a", "{{ x }}"]),
)
KEYS = st.one_of(NAMES, st.integers(0, 3), st.none())
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=40)


def assert_loads_or_one_line(path):
    try:
        assert isinstance(load_inventory(path), Inventory)
    except InventoryError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TREES)
def test_random_structures(tmp_path, tree):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert_loads_or_one_line(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(NAMES, st.dictionaries(st.sampled_from(["vars", "hosts", "children"]), TREES, max_size=3),
                       max_size=4))
def test_random_group_shaped_structures(tmp_path, tree):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert_loads_or_one_line(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="al: -[]{}&*!|>\n'\"#%@`,?0123456789", max_size=60))
def test_random_text(tmp_path, text):
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    assert_loads_or_one_line(path)


HOSTILE = {
    "self_alias": "all:\n  vars:\n    x: &a [*a]\n",
    "self_alias_mapping": "all: &a\n  children:\n    g: *a\n",
    "deep_nesting": "all:\n  vars:\n    x: " + "[" * 5000 + "]" * 5000 + "\n",
    "alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)),
    "huge_range": "all:\n  hosts:\n    n[1:99999999]:\n",
    "many_ranges": "all:\n  hosts:\n    n" + "[1:9]" * 12 + ":\n",
    "binary": "all:\n  vars:\n    b: !!binary aGVsbG8=\n  hosts:\n    h:\n",
    "python_tag": "all: !!python/object:os.system {}\n",
    "numbers_as_groups": "1:\n  hosts:\n    h:\n",
    "none_group_name": "~:\n  hosts:\n    h:\n",
    "list_of_groups": "- all\n",
    "not_utf8": b"all:\n  hosts:\n    \xff\xfe:\n",
    "long_group_chain": "".join(f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(3000)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_one_line(tmp_path, case):
    path = tmp_path / "inventory.yaml"
    content = HOSTILE[case]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_loads_or_one_line(path)
