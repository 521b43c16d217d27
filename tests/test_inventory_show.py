"""inv inventory.show: summary, --host (secrets masked), --graph, and one error line with exit 2."""

import json
import textwrap

import pytest
from invoke import Collection, Context, Program
from invoke.exceptions import Exit

from fabfile.tasks import inventory as inventory_tasks

INVENTORY = """
    all:
      vars: {db_password: hunter22, ansible_ssh_pass: pw, api: {client_token: t0k, url: http://x}}
      children:
        web:
          hosts:
            web1: {ansible_host: 192.0.2.1, ansible_user: ops, ansible_port: 2200}
        lab:
          vars: {ansible_connection: community.general.incus}
          hosts:
            c1:
"""


@pytest.fixture
def inventory_file(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(textwrap.dedent(INVENTORY))
    return str(path)


def test_summary_lists_hosts_transport_target_and_groups(inventory_file, capsys):
    inventory_tasks.show(Context(), inventory=inventory_file)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["web1", "ssh", "ops@192.0.2.1:2200", "web"]
    assert lines[2].split() == ["c1", "incus", "local:c1", "lab"]


def test_host_shows_merged_vars_with_secrets_masked(inventory_file, capsys):
    inventory_tasks.show(Context(), inventory=inventory_file, host="web1")
    shown = json.loads(capsys.readouterr().out)
    assert shown["db_password"] == shown["ansible_ssh_pass"] == shown["api"]["client_token"] == "********"
    assert (shown["address"], shown["ssh_port"], shown["api"]["url"]) == ("192.0.2.1", 2200, "http://x")


def test_graph_is_ansible_inventory_graph_layout(inventory_file, capsys):
    inventory_tasks.show(Context(), inventory=inventory_file, graph=True)
    assert capsys.readouterr().out.splitlines() == [
        "@all:", "  |--@ungrouped:", "  |--@web:", "  |  |--web1", "  |--@lab:", "  |  |--c1"]


@pytest.mark.parametrize("kwargs, message", [
    ({"host": "nope"}, "no host 'nope'; known hosts: web1, c1"),
    ({"inventory": "/nonexistent/hosts.yaml"}, "inventory file not found"),
])
def test_bad_input_is_one_error_line_and_exit_2(inventory_file, capsys, kwargs, message):
    with pytest.raises(Exit) as stopped:
        inventory_tasks.show(Context(), **{"inventory": inventory_file, **kwargs})
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_through_invoke_with_the_flags(inventory_file, capsys):
    program = Program(namespace=Collection(inventory_tasks.collection))
    program.run(["inv", "inventory.show", "--inventory", inventory_file, "--host", "c1"], exit=False)
    assert json.loads(capsys.readouterr().out)["connection"] == "incus"
