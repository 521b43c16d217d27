"""Ansible-shaped repos: group_vars/host_vars, folders and several sources, INI files, per-host refusals.

tests/inventories/ holds the cases compared with recorded ansible-inventory output; these tests
cover what a comparison cannot: error lines, refusals that stop only tasks targeting a host, the CLI.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fabfile.inventory import InventoryError, load_inventory
from fabfile.paths import REPO_ROOT
from fabfile.tasks.inventory import host_vars_text, summary_text

INV = str(Path(sys.executable).parent / "inv")


def write(folder: Path, files: dict) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def test_group_vars_all_beats_the_inventory_files_group_vars(tmp_path):
    """The issue's example: moving group_vars/all.yml into the file would change ntp_server for web hosts."""
    write(tmp_path, {
        "hosts.yml": """
            all:
              vars: {ntp_server: 10.0.0.1}
              children:
                web: {vars: {ntp_server: 10.0.0.1}, hosts: {web1: }}
        """,
        "group_vars/all.yml": "ntp_server: pool.ntp.org\n",
    })
    assert load_inventory(tmp_path / "hosts.yml").hosts["web1"].vars["ntp_server"] == "pool.ntp.org"


def test_host_vars_file_beats_inventory_host_vars_and_a_later_source_beats_an_earlier(tmp_path):
    write(tmp_path, {
        "a/hosts.yml": "all:\n  hosts:\n    h1: {port: 1, who: inventory}\n",
        "a/host_vars/h1.yml": "port: 2\n",
        "b/hosts.ini": "[web]\nh1\n",
        "b/host_vars/h1/10.yml": "port: 3\n",
        "b/host_vars/h1/20.yml": "who: b-host_vars\n",
    })
    host = load_inventory([str(tmp_path / "a"), str(tmp_path / "b")]).hosts["h1"]
    assert (host.vars["port"], host.vars["who"], host.groups) == (3, "b-host_vars", ["all", "web"])


def test_ini_values_are_typed_like_ansibles_ini_plugin(tmp_path):
    write(tmp_path, {"hosts": """
        [web]
        web1 port=8080 ratio=0.5 on=True off=no items="[1, 'a']" mode=0644 name='x y'
        [web:vars]
        note = some text # kept, as Ansible keeps it
        count = 3 # a literal with a comment
    """})
    values = load_inventory(tmp_path / "hosts").hosts["web1"].vars
    assert values["port"] == 8080 and values["ratio"] == 0.5 and values["on"] is True
    assert values["off"] == "no" and values["items"] == [1, "a"] and values["mode"] == "0644"
    assert values["name"] == "x y" and values["note"] == "some text # kept, as Ansible keeps it"
    assert values["count"] == 3


@pytest.mark.parametrize("text, expected", [
    ("[web]\nweb1 oops\n", "hosts: line 2: 'oops' after host 'web1' is not key=value"),
    ("[web:nonsense]\n", "hosts: line 1: section [web:nonsense] has unknown type"),
    ("[all:children]\nghost\n", "hosts: line 2: [all:children] names 'ghost', which is never declared"),
    ("[ghost:vars]\nx=1\n", "hosts: line 1: [ghost:vars] is for a group that is never declared"),
    ("[web]\nh 'open\n", "hosts: line 2: cannot split host line"),
    ("[web]\nh[1:2:3:4]\n", "hosts: line 2: host pattern 'h[1:2:3:4]'"),
    ("[web]\nh1:\n", "host pattern 'h1:' ends in ':'"),
])
def test_bad_ini_is_one_line_with_file_and_line(tmp_path, text, expected):
    (tmp_path / "hosts").write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "hosts")
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "hosts"))


def test_folder_ignores_what_ansible_ignores_and_refuses_scripts(tmp_path):
    write(tmp_path, {
        "inv/hosts.yml": "all:\n  hosts:\n    h1:\n",
        "inv/notes.md": "not: [an inventory\n",
        "inv/old.retry": "h9\n",
        "inv/.git/config": "[core]\n",
        "inv/group_vars/all.yml": "x: 1\n",
    })
    inventory = load_inventory(tmp_path / "inv")
    assert list(inventory.hosts) == ["h1"] and inventory.hosts["h1"].vars["x"] == 1
    (tmp_path / "inv/dynamic.py").write_text("#!/usr/bin/env python3\nprint('{}')\n")
    with pytest.raises(InventoryError, match="dynamic.py: an inventory script"):
        load_inventory(tmp_path / "inv")


def test_missing_source_and_empty_folder(tmp_path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n")
    with pytest.raises(InventoryError, match="nope: inventory file not found"):
        load_inventory(f"{tmp_path / 'hosts.yml'},{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InventoryError, match="no inventory file in this folder"):
        load_inventory(tmp_path / "empty")


def test_bad_vars_file_stops_only_tasks_targeting_its_hosts(tmp_path):
    write(tmp_path, {
        "hosts.yml": "all:\n  children:\n    web: {hosts: {web1: }}\n    db: {hosts: {db1: }}\n",
        "group_vars/web.yml": "- a list, not a mapping\n",
    })
    inventory = load_inventory(tmp_path / "hosts.yml")
    assert [h.name for h in inventory.select("db")] == ["db1"]
    with pytest.raises(InventoryError, match=r"group_vars/web.yml: a vars file must be a mapping of variables, got list"):
        inventory.select("all")


UNSUPPORTED = """
    all:
      vars: {ansible_connection: local}
      children:
        windows:
          vars: {ansible_connection: winrm}
          hosts: {win1: }
        linux:
          hosts:
            box: {}
            su_box: {ansible_connection: ssh, ansible_become: true, ansible_become_method: su}
            nc_box: {ansible_connection: ssh, ansible_ssh_common_args: "-o ProxyCommand='nc -i 1 %h %p'"}
"""


def test_unsupported_settings_refused_only_for_targeted_hosts(tmp_path):
    write(tmp_path, {"hosts.yml": UNSUPPORTED})
    inventory = load_inventory(tmp_path / "hosts.yml")
    assert [h.name for h in inventory.select("linux", "box")] == ["box"]
    for target, limit, expected in [("windows", None, "host 'win1': ansible_connection 'winrm' is not a connection"),
                                    ("all", "su_box", "host 'su_box': ansible_become_method 'su' is not supported"),
                                    ("linux", None, "host 'su_box'"),
                                    ("all", "nc_box", "host 'nc_box': ansible_ssh_common_args")]:
        with pytest.raises(InventoryError, match=expected) as caught:
            inventory.select(target, limit)
        assert "\n" not in str(caught.value) and "--limit can leave" in str(caught.value)
    summary = summary_text(inventory)
    assert "win1 (!)" in summary and "(!) win1: " in summary and "box " in summary
    assert "refused for tasks: " in host_vars_text(inventory, "su_box")


def test_cli_limit_away_from_a_refused_host_and_targeting_it(tmp_path):
    """Through `inv`: repeatable and comma-separated --inventory; a task targeting the winrm host stops
    with one line and exit 2, touching nothing (a local host would leave a marker)."""
    marker = tmp_path / "touched"
    write(tmp_path, {
        "a.yml": UNSUPPORTED,
        "b.ini": f"[linux:vars]\nmarker={marker}\n",
        "c.yml": "extra:\n  hosts:\n    box2: {}\n",
    })
    shown = subprocess.run([INV, "inventory.show", "-i", str(tmp_path / "a.yml"), "--inventory",
                            f"{tmp_path / 'b.ini'},{tmp_path / 'c.yml'}"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "win1 (!)" in shown.stdout and "box2 " in shown.stdout
    done = subprocess.run([INV, "common.setup", "-i", str(tmp_path / "a.yml"), "-i", str(tmp_path / "b.ini")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "win1" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


def test_show_host_with_mixed_key_mapping(tmp_path):
    write(tmp_path, {"hosts.yml": "all:\n  hosts:\n    sw1:\n      vlans: {10: users, 20: voice, default: quarantine}\n"})
    text = host_vars_text(load_inventory(tmp_path / "hosts.yml"), "sw1")
    assert '"10": "users"' in text and '"default": "quarantine"' in text
