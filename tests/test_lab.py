"""The local Incus lab after ``lab.up``: run as root on the lab machine (``pytest -m lab``).

The module first calls ``lab_up`` (idempotent: it repairs or does nothing), then checks
what the roles rely on: each container running at its inventory address with systemd
up, and root ssh with the lab key under strict host-key checking.
"""

from __future__ import annotations

import os
import shutil

import pytest

from fabfile.incus import instance_ref
from fabfile.lab import base, lifecycle
from fabfile.lab.settings import instance_name
from fabfile.inventory import load_inventory

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("incus") is None, reason="Incus is not installed; run inv lab.up first"),
]

INVENTORY = base.REPO_ROOT / "hosts.yaml"


@pytest.fixture(scope="module")
def first_report():
    return lifecycle.lab_up(str(INVENTORY))


@pytest.fixture(scope="module")
def lab_hosts(first_report):
    """Every inventory host the lab holds, on this machine's Incus or on a nested Incus host (remote)."""
    return [host for host in load_inventory(str(INVENTORY)).hosts.values() if host.connection == "incus"]


def remote(host) -> str:
    return host.vars.get("incus_remote") or "local"


def ref(host) -> str:
    """``NAME`` or ``REMOTE:NAME``: what lab.status prints and the incus CLI takes."""
    return instance_ref(instance_name(host), remote(host))


def test_every_container_runs_at_its_inventory_address(lab_hosts):
    listed = {}
    for name in {remote(host) for host in lab_hosts}:
        for instance in base.INCUS.json("list", "" if name == "local" else f"{name}:"):
            listed[instance_ref(instance["name"], name)] = instance
    for host in lab_hosts:
        assert listed[ref(host)]["status"] == "Running", host.name
        assert lifecycle.running_address(listed[ref(host)]) == host.address


def test_the_lab_spans_the_hosts_its_inventory_names(lab_hosts, first_report):
    nested = {entry["name"] for entry in lab_hosts[0].vars.get("lab_incus_hosts") or []}
    assert {remote(host) for host in lab_hosts} == {"local"} | nested


def test_systemd_is_up_inside_each_container(lab_hosts):
    for host in lab_hosts:
        state = base.INCUS.run("exec", "--", ref(host), "systemctl", "is-system-running",
                               check=False).stdout.strip()
        assert state in ("running", "degraded"), f"{host.name}: {state}"


def test_ssh_with_lab_key_and_strict_known_hosts(lab_hosts):
    import paramiko

    for host in lab_hosts:
        client = paramiko.SSHClient()
        client.load_host_keys(str(base.KNOWN_HOSTS))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host.address, username="root", key_filename=str(base.SSH_KEY), look_for_keys=False,
                           allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)
            _, stdout, _ = client.exec_command("hostname", timeout=10)
            assert stdout.read().decode().strip() == instance_name(host)
        finally:
            client.close()


def test_each_container_has_its_own_ssh_host_key(lab_hosts):
    addresses = {host.address for host in lab_hosts}
    keys = [line.split()[2] for line in base.KNOWN_HOSTS.read_text().splitlines()
            if line.split()[1] == "ssh-ed25519" and line.split()[0] in addresses]
    assert len(keys) == len(lab_hosts) and len(set(keys)) == len(lab_hosts)


def test_secrets_file_is_private_and_complete():
    import yaml

    path = base.REPO_ROOT / ".lab" / "secrets.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    values = yaml.safe_load(path.read_text())
    assert set(base.SECRET_NAMES) | set(base.SHORT_SECRET_NAMES) <= set(values)
    assert all(len(str(values[name])) >= 20 for name in base.SECRET_NAMES)
    assert all(len(str(values[name])) == 8 for name in base.SHORT_SECRET_NAMES)  # VRRP authentication: 8 bytes


def test_second_lab_up_changes_nothing(first_report):
    again = lifecycle.lab_up(str(INVENTORY))
    assert again.changed == [], [step.name for step in again.changed]


def test_status_lists_every_container(lab_hosts, capsys):
    rows = lifecycle.lab_status(str(INVENTORY))
    nested = {entry["name"]: "RUNNING (incus host)" for entry in lab_hosts[0].vars.get("lab_incus_hosts") or []}
    assert {row.name: row.state for row in rows} == {ref(host): "RUNNING" for host in lab_hosts} | nested
    assert all(set(row.services) == set(base.ROLE_SERVICES) for row in rows)
    printed = capsys.readouterr().out
    assert all(name in printed for name in [*map(ref, lab_hosts), *nested])


def test_systemd_sandboxing_works_in_a_container(lab_hosts):
    """The roles' hardened units need namespaces inside the container (security.nesting)."""
    done = base.INCUS.run(
        "exec", "--", instance_name(lab_hosts[0]), "systemd-run", "--quiet", "--wait", "--collect",
        "-p", "ProtectSystem=strict", "-p", "PrivateDevices=yes", "-p", "ProtectKernelTunables=yes",
        "-p", "PrivateUsers=yes", "-p", "RestrictNamespaces=yes", "-p", "PrivateTmp=yes",
        "-p", "SystemCallFilter=@system-service", "-p", "NoNewPrivileges=yes", "true",
        check=False, timeout=60,
    )
    assert done.ok, done.stderr
