"""An Ansible-shaped repo drives api.setup and stream.setup on the lab (issue 20).

The repo (tests/ansible_repo, made with ansible-vault 2.19): an inventory folder holding a YAML
file and an INI file (written here from the lab's hosts.yaml, so a private lab works too),
group_vars/ as a folder and as a file, host_vars/, a vault-encrypted file (format 1.1), an inline
``!vault`` value for the vault id ``prod`` (format 1.2, its password printed by a script) and
templated variables. No secrets file: every secret the env files need comes from the vault.
The decrypted secrets must reach the env files in the containers and nowhere else: not stdout or
stderr, not the --report JSON, not the --diff. The lab's own env files are put back afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, inv

from fabfile.incus import instance_ref
from fabfile.inventory import load_inventory

pytestmark = pytest.mark.lab

FIXTURE = Path(__file__).resolve().parent / "ansible_repo"
SECRETS = {"vaultDbPass7c41e2", "vaultJwt93ab5d", "vaultStreamKey5d02f7"}
CONNECTION = "community.general.incus"


def write_repo(root: Path) -> Path:
    """The Ansible-shaped inventory folder for the lab's balancers and service instances."""
    lab = load_inventory(str(REPO / "hosts.yaml"))
    inventory = root / "inventory"
    shutil.copytree(FIXTURE / "group_vars", inventory / "group_vars")
    shutil.copytree(FIXTURE / "host_vars", inventory / "host_vars")
    shared = {k: v for k, v in lab.hosts["haproxy"].ansible_vars.items()
              if k.startswith("lab_") or k.startswith("haproxy_") or k == "lb_vip"}

    def entry(host) -> dict:
        """The host's connection in community.general.incus's variables (its Incus remote when not local)."""
        remote = host.vars.get("incus_remote") or "local"
        return {"ansible_connection": CONNECTION, "ansible_host": host.vars.get("incus_name", host.name),
                **({} if remote == "local" else {"ansible_incus_remote": remote}), "address": host.address}

    balancers = {"haproxy": {"hosts": {h.name: entry(h) for h in lab.group("haproxy")}}}
    (inventory / "10-balancers.yml").write_text(yaml.safe_dump({"all": {"vars": shared}, **balancers}))
    lines = []
    for group in ("backend_api_instances", "stream_server_instances"):
        lines.append(f"[{group}]")
        lines += [" ".join([h.name, *(f"{key}={value}" for key, value in entry(h).items())]) for h in lab.group(group)]
    (inventory / "20-services").write_text("\n".join(lines) + "\n")
    password_script = root / "prod-password.sh"
    password_script.write_text(f"#!/bin/sh\ncat '{FIXTURE / 'prod-password.txt'}'\n")
    password_script.chmod(0o700)
    return inventory


def in_container(host, path: str) -> str:
    name = instance_ref(host.vars.get("incus_name", host.name), host.vars.get("incus_remote"))
    return subprocess.run(["incus", "exec", name, "--", "cat", path], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def test_ansible_repo_drives_setup_with_vault_secrets_only_in_env_files(deployed_lab, tmp_path):
    inventory = write_repo(tmp_path)
    vault = ["--vault-password-file", str(FIXTURE / "vault-password.txt"),
             "--vault-id", f"prod@{tmp_path / 'prod-password.sh'}"]
    lab = load_inventory(str(REPO / "hosts.yaml"))
    try:
        printed = ""
        for task, group, path in (("api.setup", "backend_api_instances", "/etc/veza/backend-api.env"),
                                  ("stream.setup", "stream_server_instances", "/etc/veza/stream-server.env")):
            report = tmp_path / f"{task}.json"
            done = inv(task, "-i", str(inventory), *vault, "--diff", "--report", str(report), timeout=600)
            printed += done.stdout + done.stderr + report.read_text()
            assert f"-- recap: {task}" in done.stdout
            for host in lab.group(group):
                env = in_container(host, path)
                if group == "backend_api_instances":
                    assert "vaultDbPass7c41e2@db.veza.lab/" in env and 'JWT_SECRET="vaultJwt93ab5d"' in env
                    expected_env = "ansible-host-vars" if host.name == "backend-api-2" else \
                        "ansible-backend_api_instances"  # host_vars beats the templated group_vars/all value
                else:
                    assert 'STREAM_SIGNING_KEY="vaultStreamKey5d02f7"' in env
                    expected_env = "ansible-stream_server_instances"
                assert f'APP_ENV="{expected_env}"' in env
        assert "DATABASE_URL: changed" in printed and "STREAM_SIGNING_KEY: changed" in printed  # --diff: keys only
        for secret in SECRETS:
            assert secret not in printed, secret
        # Without the passwords: one line naming the vault file, exit 2, nothing changed.
        refused = inv("api.setup", "-i", str(inventory), check=False)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "backend_api_instances/vault.yml: encrypted with Ansible Vault, and no vault password" in refused.stderr
        assert "-- recap" not in refused.stdout
    finally:
        inv("api.setup", timeout=600)
        inv("stream.setup", timeout=600)
    assert "vaultJwt93ab5d" not in in_container(lab.group("backend_api_instances")[0], "/etc/veza/backend-api.env")
