"""The incus and ssh transports for real, against the lab's containers."""

import textwrap

import pytest

from fabfile.inventory import Host, load_inventory
from fabfile.shell import q
from fabfile.transports import IncusTransport, SshTransport, TransportError

from conftest import REPO, inv

pytestmark = pytest.mark.lab

NASTY = ["plain", "with space", "it's", 'dq"uote', "$HOME", "a;b", "new\nline", "`id`", "ünï"]
SSH_DIR = REPO / ".lab" / "ssh"


@pytest.fixture(scope="module")
def target(lab):
    return load_inventory(lab).hosts["stream-server-2"]


def ssh_host(target, **extra):
    values = {"connection": "ssh", "address": target.address, "ssh_user": "root",
              "ssh_key_file": str(SSH_DIR / "id_ed25519"), "ssh_known_hosts": str(SSH_DIR / "known_hosts"), **extra}
    return Host(name=target.name, inventory_vars=values, groups=["all"])


@pytest.mark.parametrize("make", ["incus", "ssh"])
def test_run_and_put_survive_nasty_values(target, make, tmp_path):
    transport = IncusTransport(target) if make == "incus" else SshTransport(ssh_host(target))
    try:
        for value in NASTY:
            assert transport.run(f"printf '%s' {q(value)}").stdout == value
        remote = f"/tmp/veza transport test {make} 'x'"
        transport.put("payload $x\n".encode(), remote, mode="0640")
        assert transport.run(f"cat {q(remote)}").stdout == "payload $x\n"
        assert transport.run(f"stat -c '%a %U' {q(remote)}").stdout.strip() == "640 root"
        assert transport.run("exit 7", warn=True).exited == 7
        transport.run(f"rm -f {q(remote)}")
    finally:
        transport.close()


def test_ssh_rejects_an_unknown_host_key_by_default(target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SshTransport(ssh_host(target, ssh_known_hosts=str(empty)))
    with pytest.raises(TransportError, match="host key .* is not known"):
        transport.run("true")


def test_ssh_accept_new_is_an_explicit_opt_in(target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SshTransport(ssh_host(target, ssh_known_hosts=str(empty), ssh_host_key_policy="accept-new"))
    assert transport.run("hostname").stdout.strip() == target.vars.get("incus_name", target.name)  # the container's own name
    transport.close()


def test_a_play_over_ssh_with_check_mode(target, tmp_path):
    inventory = tmp_path / "ssh-hosts.yaml"
    inventory.write_text(textwrap.dedent(f"""
        all:
          vars:
            ansible_connection: ssh
            ansible_user: root
            ssh_key_file: {SSH_DIR / 'id_ed25519'}
            ssh_known_hosts: {SSH_DIR / 'known_hosts'}
          children:
            edge:
              hosts:
                {target.name}:
                  ansible_host: {target.address}
    """))
    first = inv("common.setup", "--inventory", str(inventory), "--report", str(tmp_path / "r.json"))
    assert f"{target.name:<16} : ok=" in first.stdout and "failed=0" in first.stdout
    again = inv("common.setup", "--inventory", str(inventory), "--check")
    assert "changed=0 failed=0" in again.stdout
