"""Ansible Vault and Jinja2-templated variables in the inventory.

The vault texts are the ones ansible-vault 2.19 wrote into tests/inventories/vault_repo (a whole
file in format 1.1, an inline value in format 1.2 with the label ``prod``), so these tests check
decryption against Ansible's own output, not against an encryptor of ours.
"""

import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fabfile.inventory import InventoryError, load_inventory
from fabfile.inventory.jinja import Unresolved
from fabfile.inventory.vault import Vault
from fabfile.masking import secret_values
from fabfile.output import Masker
from fabfile.paths import REPO_ROOT
from fabfile.tasks.inventory import host_vars_text, summary_text

CASE = Path(__file__).resolve().parent / "inventories" / "vault_repo"
INV = str(Path(sys.executable).parent / "inv")
FILE_SECRET, INLINE_SECRET = "s3cr3t-from-file", "inline-stream-key"


@pytest.fixture
def repo(tmp_path):
    """A copy of the vault_repo case (its password files beside it)."""
    target = tmp_path / "repo"
    shutil.copytree(CASE, target)
    return target


def both_passwords(repo) -> Vault:
    return Vault.from_options(vault_ids=[f"prod@{repo / 'prod-password.txt'}"],
                              password_files=[str(repo / "vault-password.txt")], environ={})


def test_whole_file_and_inline_vault_decrypt_and_templates_resolve(repo):
    inventory = load_inventory(repo / "inventory", vault=both_passwords(repo))
    api = inventory.hosts["api-2"].vars
    assert api["vault_db_password"] == FILE_SECRET and api["stream_key"] == INLINE_SECRET
    assert api["db_url"] == f"postgres://veza:{FILE_SECRET}@db.internal/veza"
    assert api["api_port"] == 8080  # one expression keeps its type, as in ansible-core 2.19
    assert api["ansible_host"] == api["address"] == "api-2.lab.internal"
    assert api["peers"] == "API-1,API-2"
    assert api["stream_token_raw"] == "{{ not a template }}"  # !unsafe
    assert inventory.hosts["api-1"].vars["address"] == "10.9.0.11"  # host_vars beats group_vars/all
    masker = Masker()
    for secret in (FILE_SECRET, INLINE_SECRET, api["db_url"]):
        assert masker(f"x {secret} y") == "x ******** y"


def test_vault_is_lazy_a_host_needing_no_vault_needs_no_password(repo):
    (repo / "inventory/group_vars/all.yml").write_text("ansible_host: '{{ inventory_hostname }}.lab.internal'\n")
    inventory = load_inventory(repo / "inventory", vault=Vault())
    assert [h.name for h in inventory.select("stream")] == ["stream-1"]
    with pytest.raises(InventoryError) as caught:
        inventory.select("backend_api")
    message = str(caught.value)
    assert message.startswith(str(repo / "inventory/group_vars/backend_api/vault.yml"))
    assert "no vault password was given; pass --vault-password-file" in message and "\n" not in message


def test_inline_vault_is_decrypted_only_when_a_task_reads_it(repo):
    vault = Vault.from_options(password_files=[str(repo / "vault-password.txt")], environ={})  # not label prod's
    inventory = load_inventory(repo / "inventory", vault=vault)
    stream = inventory.select("stream")[0]  # selecting, copying and masking its variables open nothing
    copied = {**stream.vars_with({"stream_key": "default"})}
    Masker(secret_values(copied))
    assert not [text for text in vault.opened if "1.2;AES256;prod" in text]  # the inline value: still sealed
    with pytest.raises(InventoryError) as caught:
        str(copied["stream_key"])  # a role reading it: now the password is needed
    message = str(caught.value)
    assert message.startswith(str(repo / "inventory/group_vars/all.yml") + ": line 2: cannot decrypt the vault (label prod)")
    assert "\n" not in message and INLINE_SECRET not in message


def test_a_template_reading_a_vault_value_stays_sealed_until_read(repo):
    (repo / "inventory/host_vars/api-1.yml").write_text('signed_url: "https://cdn/{{ stream_key }}/x"\n')
    vault = both_passwords(repo)
    api = load_inventory(repo / "inventory", vault=vault).hosts["api-1"]
    assert INLINE_SECRET not in vault.opened.values()
    assert api.vars["signed_url"] == f"https://cdn/{INLINE_SECRET}/x"  # read: rendered from the opened value
    assert INLINE_SECRET in vault.opened.values()
    assert Masker()(f"x {api.vars['signed_url']} y") == "x ******** y"  # made from a secret: a secret


LAZY = Path(__file__).resolve().parent / "inventories" / "lazy_vault"


def test_a_task_needs_the_password_of_the_vault_values_it_reads_only():
    """stream.setup reads stream_signing_key (its env file), not unused_api_token (label ops, no password given)."""
    env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": ""}
    command = [INV, "stream.setup", "-i", str(LAZY / "hosts.yml"), "--check"]
    wrong = subprocess.run([*command, "--vault-id", f"prod@{LAZY / 'ops-password.txt'}"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60, env=env)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and wrong.stdout == "", (wrong.stdout, wrong.stderr)
    assert wrong.stderr.startswith(f"error: {LAZY / 'group_vars/stream_server_instances.yml'}: line 1: cannot decrypt")
    right = subprocess.run([*command, "--vault-id", f"prod@{LAZY / 'prod-password.txt'}"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60, env=env)
    # Planned (the env file rendered with the opened key), then stopped at the unreachable host: exit 1, not 2.
    assert right.returncode == 1 and "Unable to connect to port 1 on 127.0.0.1" in right.stdout, (right.stdout, right.stderr)
    assert "sig-key-from-vault-42" not in right.stdout + right.stderr and "cannot decrypt" not in right.stderr


def test_wrong_password_and_tampered_file_name_the_file(repo, tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-it\n")
    vault = Vault.from_options(vault_ids=[f"prod@{repo / 'prod-password.txt'}"], password_files=[str(wrong)], environ={})
    with pytest.raises(InventoryError, match="vault.yml: cannot decrypt the vault with the vault password"):
        load_inventory(repo / "inventory", vault=vault).select("backend_api")
    path = repo / "inventory/group_vars/backend_api/vault.yml"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:10] + ("0" if lines[3][10] != "0" else "1") + lines[3][11:]  # one byte of the ciphertext
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InventoryError, match="or the file was altered \\(HMAC mismatch\\)"):
        load_inventory(repo / "inventory", vault=both_passwords(repo)).select("backend_api")


def test_password_script_client_script_and_environment(repo, tmp_path):
    script = tmp_path / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\ncat '{repo / 'vault-password.txt'}'\n")
    client = tmp_path / "vault-client.sh"
    client.write_text(f"#!/bin/sh\n[ \"$1 $2\" = '--vault-id prod' ] && cat '{repo / 'prod-password.txt'}'\n")
    for path in (script, client):
        path.chmod(0o700)
    vault = Vault.from_options(vault_ids=[f"prod@{client}"], environ={"ANSIBLE_VAULT_PASSWORD_FILE": str(script)})
    assert load_inventory(repo / "inventory", vault=vault).hosts["api-1"].vars["stream_key"] == INLINE_SECRET
    failing = tmp_path / "fails.sh"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o700)
    with pytest.raises(InventoryError, match="fails.sh: the vault password script exited 3"):
        Vault.from_options(password_files=[str(failing)], environ={})
    with pytest.raises(InventoryError, match="expected LABEL@SOURCE"):
        Vault.from_options(vault_ids=["prod@"], environ={})


def test_cli_show_masks_decrypted_values_and_a_task_refuses_without_password(repo):
    env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": ""}
    shown = subprocess.run([INV, "inventory.show", "-i", str(repo / "inventory"), "--host", "api-1",
                            "--vault-password-file", str(repo / "vault-password.txt"),
                            "--vault-id", f"prod@{repo / 'prod-password.txt'}"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert shown.returncode == 0, shown.stderr
    assert FILE_SECRET not in shown.stdout and INLINE_SECRET not in shown.stdout and "veza:" not in shown.stdout
    assert '"vault_db_password": "********"' in shown.stdout and '"db_url": "********"' in shown.stdout
    refused = subprocess.run([INV, "common.setup", "-i", str(repo / "inventory")], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "vault.yml: encrypted with Ansible Vault, and no vault password was given" in refused.stderr


def test_ask_vault_pass_reads_without_echo(repo):
    """Through a real terminal: the prompt shows, the typed password never comes back on it."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: inv on the pty
        os.chdir(REPO_ROOT)
        os.execve(INV, [INV, "inventory.show", "-i", str(repo / "inventory"), "--ask-vault-pass", "--vault-id",
                        f"prod@{repo / 'prod-password.txt'}"], {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": ""})
    seen, deadline, sent = b"", time.monotonic() + 60, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if not sent and b"Vault password: " in seen:
                os.write(terminal, (repo / "vault-password.txt").read_text().strip().encode() + b"\n")
                sent = True
    finally:
        _, status = os.waitpid(pid, 0)
    assert sent and os.waitstatus_to_exitcode(status) == 0, seen
    assert b"lab-vault-password" not in seen and b"api-1" in seen


def test_template_errors_name_host_and_variable_and_only_stop_what_uses_them(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent("""
        all:
          vars:
            listen: "{{ ansible_default_ipv4.address }}"   # a fact: nothing here can know it
            a: "{{ b }}"
            b: "{{ a }}"
          children:
            web:
              hosts:
                web1: {ansible_host: "{{ inventory_hostname }}.{{ domain }}"}
                web2: {ansible_host: "{{ inventory_hostname | upper }}", n: "{{ [1, 2] | map('int') | sum }}",
                       mine: "{{ hostvars['web2'].n + 1 }}", g: "{{ group_names }}", home: "{{ lookup('env', 'HOME') }}"}
    """))
    inventory = load_inventory(path)
    with pytest.raises(InventoryError) as caught:
        inventory.select("web", "web1")
    assert str(caught.value).startswith(f"{path}: host 'web1': cannot template variable 'ansible_host': "
                                        "'domain' is undefined")
    web2 = inventory.select("web", "web2")[0].vars
    assert (web2["address"], web2["n"], web2["mine"], web2["g"]) == ("WEB2", 3, 4, ["web"])
    assert isinstance(web2["listen"], Unresolved) and isinstance(web2["a"], Unresolved)
    with pytest.raises(InventoryError, match="host 'web2': cannot template variable 'listen': "
                                             "'ansible_default_ipv4' is undefined"):
        str(web2["listen"])  # what a role rendering it would do
    assert "refer to each other in a loop (a -> b -> a)" in web2["a"].reason
    assert "lookup('env', ...) is not supported here" in web2["home"].reason
    assert "<cannot template: " in host_vars_text(inventory, "web2") and "web1 (!)" in summary_text(inventory)


def test_a_vaulted_connection_variable_opens_with_its_host_and_stops_only_that_host(tmp_path):
    """Every task connects, so a vaulted ansible_user is read for its host at load; without the password
    that host alone is refused (--limit away from it works), with one line naming the file."""
    blob = (LAZY / "group_vars/stream_server_instances.yml").read_text().split("unused_api_token")[0]
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars/web-z.yml").write_text(blob.replace("stream_signing_key", "ansible_user"))
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    web-z: {ansible_host: 10.0.0.5}\n    db-z: {}\n")
    vault = Vault.from_options(vault_ids=[f"prod@{LAZY / 'prod-password.txt'}"], environ={})
    assert load_inventory(tmp_path / "hosts.yml", vault=vault).hosts["web-z"].vars["ssh_user"] == "sig-key-from-vault-42"
    closed = load_inventory(tmp_path / "hosts.yml", vault=Vault())
    assert [host.name for host in closed.select("all", "db-z")] == ["db-z"]
    with pytest.raises(InventoryError, match=r"host_vars/web-z.yml: line 1: encrypted with Ansible Vault, and no vault password"):
        closed.select("all")
