"""Inventory shapes, precedence, fallback and every bad input: one line, no host touched."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fabfile.paths import REPO_ROOT
from fabfile.inventory import InventoryError, load_inventory

REPO = REPO_ROOT


def write(tmp_path, text, name="hosts.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_repo_inventory_has_the_roles_groups():
    inventory = load_inventory(REPO / "hosts.yaml")
    assert [h.name for h in inventory.group("haproxy")] == ["haproxy", "haproxy-2"]
    assert [h.name for h in inventory.group("backend_api_instances")] == ["backend-api-1", "backend-api-2", "backend-api-3"]
    assert [h.name for h in inventory.group("stream_server_instances")] == [
        "stream-server-1", "stream-server-2", "stream-server-3"]
    # the lab spans two Incus hosts: one balancer and one instance of each pool on the second
    remotes = {h.name: h.vars.get("incus_remote") for h in inventory.hosts.values()}
    assert [name for name, remote in remotes.items() if remote == "incus-2"] == [
        "haproxy-2", "backend-api-3", "stream-server-3"]
    assert all(h.connection == "incus" and h.address for h in inventory.hosts.values())


def test_precedence_defaults_all_group_outer_inner_host_cli(tmp_path):
    path = write(tmp_path, """
        all:
          vars: {level: all, from_all: 1, from_outer: all, from_inner: all, from_host: all}
          children:
            outer:
              vars: {level: outer, from_outer: outer, from_inner: outer, from_host: outer}
              children:
                inner:
                  vars: {level: inner, from_inner: inner, from_host: inner}
                  hosts:
                    web-1: {address: 10.0.0.2, level: host, from_host: host}
    """)
    host = load_inventory(path, cli_vars={"level": "cli"}).hosts["web-1"]
    merged = host.vars_with({"from_default": "default", "from_all": "default", "level": "default"})
    assert merged["from_default"] == "default"
    assert merged["from_all"] == 1
    assert merged["from_outer"] == "outer"
    assert merged["from_inner"] == "inner"
    assert merged["from_host"] == "host"
    assert merged["level"] == "cli"
    assert host.groups == ["all", "outer", "inner"]


def test_ansible_connection_variables_map_onto_ours(tmp_path):
    path = write(tmp_path, """
        all:
          children:
            lb:
              hosts:
                a: {ansible_host: web-a, address: 10.0.0.5, ansible_connection: community.general.incus,
                    ansible_incus_remote: cluster}
                b: {ansible_ssh_host: 10.0.0.6, ansible_connection: ansible.builtin.ssh, ansible_ssh_user: ops,
                    ansible_ssh_port: "2200", ansible_ssh_private_key_file: ~/.ssh/ops}
                c: {ansible_connection: ansible.builtin.local}
                d: {ansible_host: 10.0.0.8, ansible_ssh_common_args: "-o ProxyJump=ops@bastion:2222 -o StrictHostKeyChecking=no"}
                e: {ansible_ssh_common_args: '-o ProxyCommand="ssh -W %h:%p -q -p 2200 jump@bastion2" -o UserKnownHostsFile=/dev/null'}
                f: {ansible_incus_host: real-f, ansible_connection: community.general.incus}
    """)
    hosts = load_inventory(path).hosts
    assert {k: hosts["a"].vars[k] for k in ("connection", "incus_name", "incus_remote", "address")} == {
        "connection": "incus", "incus_name": "web-a", "incus_remote": "cluster", "address": "10.0.0.5"}
    assert {k: hosts["b"].vars[k] for k in ("connection", "address", "ssh_user", "ssh_port", "ssh_key_file")} == {
        "connection": "ssh", "address": "10.0.0.6", "ssh_user": "ops", "ssh_port": 2200, "ssh_key_file": "~/.ssh/ops"}
    assert hosts["c"].connection == "local"
    assert (hosts["d"].vars["ssh_proxy_jump"], hosts["d"].vars["ssh_host_key_policy"]) == ("ops@bastion:2222", "accept-new")
    assert (hosts["e"].vars["ssh_proxy_jump"], hosts["e"].vars["ssh_known_hosts"]) == ("jump@bastion2:2200", "/dev/null")
    assert hosts["f"].vars["incus_name"] == "real-f" and hosts["f"].address is None
    assert hosts["b"].ansible_vars["ansible_ssh_host"] == "10.0.0.6"  # Ansible's names stay alongside ours


def test_become_maps_onto_ours_with_ansible_booleans(tmp_path):
    path = write(tmp_path, """
        all:
          vars: {ansible_user: deploy}
          hosts:
            a: {ansible_become: "yes"}
            b: {ansible_become: true, ansible_become_user: postgres, ansible_become_method: sudo}
            c: {ansible_become: off}
            d: {}
    """)
    hosts = load_inventory(path).hosts
    assert (hosts["a"].vars["become"], hosts["a"].vars.get("become_user")) == (True, None)
    assert (hosts["b"].vars["become"], hosts["b"].vars["become_user"]) == (True, "postgres")
    assert hosts["c"].vars["become"] is False and "become" not in hosts["d"].vars


def test_ssh_is_the_default_and_goes_to_the_inventory_name(tmp_path):
    path = write(tmp_path, "all:\n  hosts:\n    web1.example.com:\n")
    host = load_inventory(path).hosts["web1.example.com"]
    assert (host.connection, host.address, host.ssh_address) == ("ssh", None, "web1.example.com")
    assert host.groups == ["all", "ungrouped"]


def test_set_values_beat_inventory_whatever_the_spelling(tmp_path):
    path = write(tmp_path, "all:\n  hosts:\n    h: {ansible_host: 10.0.0.1, ansible_user: ops}\n")
    host = load_inventory(path, cli_vars={"ansible_host": "10.0.0.9", "ssh_user": "root"}).hosts["h"]
    assert (host.address, host.vars["ssh_user"], host.inventory_vars["address"]) == ("10.0.0.9", "root", "10.0.0.1")


def test_precedence_by_depth_priority_and_name(tmp_path):
    """Issue 11: a later group's copy of the all vars must not beat an earlier, more specific group."""
    path = write(tmp_path, """
        all:
          vars: {ansible_user: ubuntu}
          children:
            webservers:
              vars: {ansible_user: deploy, who: webservers}
              hosts: {web-1: }
            monitoring:
              vars: {who: monitoring}
              hosts: {web-1: }
            aaa:
              vars: {who: aaa, ansible_group_priority: 5}
              hosts: {web-1: }
    """)
    host = load_inventory(path).hosts["web-1"]
    assert host.vars["ssh_user"] == "deploy"
    assert host.vars["who"] == "aaa"  # same depth: priority 5 beats the default 1, then names
    assert host.groups == ["all", "monitoring", "webservers", "aaa"]
    assert "ansible_group_priority" not in host.vars  # a group setting, not a variable


def test_host_in_two_groups_with_same_vars_is_fine(tmp_path):
    path = write(tmp_path, """
        all:
          children:
            a: {hosts: {h1: {address: 10.0.0.2}}}
            b: {hosts: {h1: {address: 10.0.0.2}}}
            c: {hosts: {h1: }}
    """)
    inventory = load_inventory(path)
    assert list(inventory.hosts) == ["h1"]
    assert inventory.hosts["h1"].groups == ["all", "a", "b", "c"]


def test_limit_by_host_and_group(tmp_path):
    inventory = load_inventory(REPO / "hosts.yaml")
    assert [h.name for h in inventory.select("backend_api_instances", "backend-api-2")] == ["backend-api-2"]
    assert [h.name for h in inventory.select("all", "haproxy,stream_server_instances")] == [
        "haproxy", "haproxy-2", "stream-server-1", "stream-server-2", "stream-server-3"]


BAD_INVENTORIES = {
    "syntax": ("all:\n  children:\n    lb: {hosts: [\n", r"line \d+: YAML syntax error"),
    "conflict": ("all:\n  children:\n    a: {hosts: {h: {address: 10.0.0.2}}}\n    b: {hosts: {h: {address: 10.0.0.3}}}\n",
                 "defined in groups 'a' and 'b' with different values for 'address'"),
    "unknown_transport": ("all:\n  children:\n    lb: {hosts: {h: {connection: telnet}}}\n", "connection 'telnet' is not a connection we implement"),
    "group_not_mapping": ("all:\n  children:\n    lb: [h1, h2]\n", "group 'lb' must be a mapping"),
    "scalar_top": ("just text\n", "the top level must be a mapping"),
    "become_su": ("all:\n  hosts: {h: {ansible_become: true, ansible_become_method: su}}\n",
                  "host 'h': ansible_become_method 'su' is not supported; use sudo"),
    "become_maybe": ("all:\n  hosts: {h: {ansible_become: maybe}}\n", "host 'h': ansible_become 'maybe' is not a boolean"),
    "become_user": ("all:\n  hosts: {h: {ansible_become: yes, ansible_become_user: 'root; id'}}\n",
                    "ansible_become_user 'root; id' is not a user name"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVENTORIES))
def test_bad_inventory_is_one_line_naming_the_file(tmp_path, case):
    text, expected = BAD_INVENTORIES[case]
    path = write(tmp_path, text)
    with pytest.raises(InventoryError, match=expected) as caught:
        load_inventory(path).select("all")  # a host's own problem stops a task that targets it
    message = str(caught.value)
    assert message.startswith(str(path))
    assert "\n" not in message


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InventoryError, match="inventory file not found"):
        load_inventory(tmp_path / "nope.yaml")
    with pytest.raises(InventoryError, match="no inventory file in this folder"):
        load_inventory(tmp_path)  # a folder source without inventory files


def test_limit_matching_nothing():
    inventory = load_inventory(REPO / "hosts.yaml")
    with pytest.raises(InventoryError, match="--limit 'web-9' matches no host or group"):
        inventory.select("haproxy", "web-9")
    with pytest.raises(InventoryError, match="matches no host of 'haproxy'"):
        inventory.select("haproxy", "backend-api-1")


def test_cli_bad_inventory_exits_2_with_one_line_and_runs_nothing(tmp_path):
    """Through the real `inv`: one stderr line, exit 2, no traceback, and no host command (a
    local-transport host would leave a marker file if any command ran)."""
    marker = tmp_path / "touched"
    path = write(tmp_path, f"""
        all:
          vars: {{connection: local, marker: "{marker}"}}
          children:
            haproxy:
              hosts:
                lb1: {{}}
                lb1b: [oops]
    """)
    done = subprocess.run([str(Path(sys.executable).parent / "inv"), "common.setup", "--inventory", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "host 'lb1b' in group 'haproxy' must be a mapping" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not marker.exists()
