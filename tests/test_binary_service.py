"""The binary_service role: one mechanism, two configurations; secrets checked before any change."""

import subprocess
import textwrap

import pytest

from conftest import INV, REPO
from fabfile.inventory import Host
from fabfile.roles.binary_service import role_for
from fabfile.services import BACKEND_API, STREAM_SERVER
from fabfile.roles.base import HostContext
from fabfile.secrets_file import Secrets
from fabfile.templating import TemplateError

SECRETS = Secrets({"database_password": "db-pass-123", "jwt_secret": "jwt-456", "stream_signing_key": "sig-789"}, "s.yaml")


def operations(config, secrets=SECRETS):
    role = role_for(config, secrets)
    host = Host(name="node-1", inventory_vars={"address": "10.0.0.2"}, groups=["all"])
    variables = {**host.vars_with(role.defaults), "inventory_hostname": host.name}
    return {op.name: op for op in role.steps(HostContext(host=host, inventory=None, vars=variables))}


@pytest.mark.parametrize("config, user, unit, port", [
    (BACKEND_API, "veza-api", "veza-backend-api", 8080),
    (STREAM_SERVER, "veza-stream", "veza-stream-server", 8082),
])
def test_each_configuration_renders_its_own_unit_and_env(config, user, unit, port):
    ops = operations(config)
    assert f"user {user}" in ops
    unit_text = ops[f"unit {unit}.service"].diff_new
    assert f"User={user}" in unit_text and "ProtectSystem=strict" in unit_text and "CapabilityBoundingSet=\n" in unit_text
    assert f"EnvironmentFile=/etc/veza/{'backend-api' if config is BACKEND_API else 'stream-server'}.env" in unit_text
    env = next(op for name, op in ops.items() if name.endswith(".env"))
    assert f'LISTEN_PORT="{port}"' in env.diff_new and 'INSTANCE_NAME="node-1"' in env.diff_new
    assert env.notify == [f"restart {unit}"]


def test_a_secret_missing_from_the_file_is_named():
    partial = Secrets({"database_password": "x"}, "/tmp/partial.yaml")
    with pytest.raises(TemplateError, match="/tmp/partial.yaml: secret 'jwt_secret' is missing"):
        operations(BACKEND_API, partial)


def test_setup_with_an_incomplete_secrets_file_exits_before_any_change(tmp_path):
    marker = tmp_path / "touched"
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(textwrap.dedent(f"""
        all:
          vars: {{connection: local, backend_api_install_dir: "{tmp_path}/opt", veza_config_dir: "{marker}"}}
          children:
            backend_api_instances:
              hosts:
                api-local: {{}}
    """))
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("database_password: only-this-one\n")
    done = subprocess.run([*INV, "api.setup", "--inventory", str(inventory), "--secrets", str(secrets)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {secrets}: secret 'jwt_secret' is missing; add it to the secrets file"
    assert "only-this-one" not in done.stdout + done.stderr
    assert not marker.exists() and not (tmp_path / "opt").exists()
