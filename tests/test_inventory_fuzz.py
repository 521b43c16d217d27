"""Hostile and random input: the loader only ever returns an Inventory or raises one InventoryError line,
and ``inventory.show`` prints every host it returns (mixed-key mappings included) without a traceback."""

import shutil

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabfile.inventory import Inventory, InventoryError, load_inventory
from fabfile.tasks.inventory import graph_text, host_vars_text, summary_text

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
        loaded = load_inventory(path)
    except InventoryError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    assert isinstance(loaded, Inventory)
    summary_text(loaded), graph_text(loaded)
    for name, host in loaded.hosts.items():
        host_vars_text(loaded, name)
        assert host.problem is None or ("\n" not in host.problem and host.problem.startswith(str(path)))


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


# Mappings whose keys mix ints, strings, floats, booleans and null, at any depth.
MIXED_KEYS = st.one_of(st.integers(-5, 30), st.sampled_from(["default", "10", "a", "", "all"]), st.none(),
                       st.booleans(), st.floats(allow_nan=False, allow_infinity=False))
MIXED_TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(MIXED_KEYS, inner, max_size=5)), max_leaves=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["vlans", "ports", "ansible_host", "x"]), MIXED_TREES, max_size=4))
def test_mixed_key_mappings_load_and_show(tmp_path, host_vars):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"sw1": host_vars}, "vars": host_vars}}))
    assert_loads_or_one_line(path)


INI_LINES = st.sampled_from([
    "[web]", "[web:vars]", "[web:children]", "[all:children]", "[all:vars]", "[db]", "[bad:kind]", "[ spaced ]",
    "web1", "web[1:3] a=1 b='x'", "db1:2222 ansible_connection=winrm", "h x=[1,", "h x={'a': 1, 2: 3}", "web",
    "db", "k = v", "k = {1: 2}", "novalue", "# comment", "; comment", "h 'unclosed", "---", "h:", "h ansible_port=ssh",
    "later", "[later]", "x = (1, 2) # c", "h y=b'bytes' z=1j w=...", "h v=" + "[" * 200, "",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(INI_LINES, max_size=14))
def test_random_ini_files(tmp_path, lines):
    path = tmp_path / "hosts"
    path.write_text("\n".join(lines) + "\n")
    assert_loads_or_one_line(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="[]:=#; abwh01\n'\"{}", max_size=60))
def test_random_ini_text(tmp_path, text):
    path = tmp_path / "hosts.ini"
    path.write_text(text)
    assert_loads_or_one_line(path)


# An inventory folder: inventory files (YAML, INI) and group_vars/host_vars files in every form Ansible reads.
FOLDER_FILES = st.sampled_from([
    "hosts.yml", "hosts", "10-extra.ini", "sub/more.yaml", "README.md", ".hidden.yml", "group_vars/all.yml",
    "group_vars/web", "group_vars/web/a.yml", "group_vars/web/b.json", "group_vars/db.yaml", "host_vars/web1.yml",
    "host_vars/web1/x", "host_vars/h.json", "group_vars/all/z.yml",
])
FILE_CONTENTS = st.one_of(
    MIXED_TREES.map(yaml.safe_dump),
    st.lists(INI_LINES, max_size=6).map("\n".join),
    st.sampled_from(["all:\n  children:\n    web:\n      hosts:\n        web1:\n", "[web]\nweb1 a=1\n", "{}", "",
                     "x: 1\n", "[1, 2]", "#!/bin/sh\n", "all:\n  hosts: {h: {ansible_connection: winrm}}\n"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(FOLDER_FILES, FILE_CONTENTS, min_size=1, max_size=6))
def test_random_inventory_folders(tmp_path, files):
    folder = tmp_path / "inventory"
    shutil.rmtree(folder, ignore_errors=True)
    for name, content in files.items():
        path = folder / name
        if path.parent.is_file() or path.is_dir():
            continue  # group_vars/web as a file and as a folder: one of them
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    assert_loads_or_one_line(folder)
