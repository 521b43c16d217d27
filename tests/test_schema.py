"""The one variable schema (fabfile/schema.py): declared once, checked before any task, every slot covered."""

import subprocess

import pytest
import yaml

from conftest import INV, REPO
from fabfile import schema
from fabfile.lb_pair import DEFAULTS as LB_DEFAULTS
from fabfile.monitoring.settings import DEFAULTS as MONITORING_DEFAULTS
from fabfile.roles.binary_service import COMMON_DEFAULTS
from fabfile.roles.common import DEFAULTS as COMMON_ROLE_DEFAULTS
from fabfile.roles.haproxy_vars import DEFAULTS as HAPROXY_DEFAULTS
from fabfile.services import SERVICES

ALL_DEFAULTS = [HAPROXY_DEFAULTS, LB_DEFAULTS, MONITORING_DEFAULTS, COMMON_DEFAULTS, COMMON_ROLE_DEFAULTS,
                *[config.defaults for config in SERVICES.values()]]


def test_every_role_default_is_declared_and_fits_its_own_declaration():
    declared = schema.schema()
    for defaults in ALL_DEFAULTS:
        for name, value in defaults.items():
            assert name in declared, name
            assert schema.value_problem(name, value) is None, (name, value)


def test_every_declared_text_slot_refuses_what_could_add_a_line_a_block_or_a_program():
    payloads = ["x\ny", 'x"}', "x' ; id", "x$(id)", "x`id`", "/x,fork!!SYSTEM:id", "x\x1b[2J", "x|id", "x&id"]
    checked = 0
    for name, var in schema.schema().items():
        if var.kind in ("list", "map", "servers", "bool", "int", "number", "choice", "count_or_percent") or \
                var.secret or schema.is_secret_key(name):
            continue
        for payload in payloads:
            assert schema.value_problem(name, payload) is not None, (name, payload)
        checked += 1
    assert checked > 60


@pytest.mark.parametrize("name, value", [
    ("haproxy_maxconn", "٤٠٩٦"), ("haproxy_maxconn", "4096.5"), ("haproxy_maxconn", True), ("haproxy_maxconn", [1]),
    ("haproxy_http_port", 70000), ("haproxy_http_port", "８０"), ("lb_vrrp_version", "3x"), ("lb_vrrp_version", {"a": 1}),
    ("lb_vrrp_priority", 0), ("haproxy_failover_l7_retry_methods", "GET"),
    ("haproxy_failover_l7_retry_methods", ["GET", "PO ST"]), ("stream_server_writable_dirs", "/var/x"),
    ("stream_server_writable_dirs", ["/var/x", "relative"]), ("lab_subnet", "10.0.0.0/33"), ("lab_subnet", 5),
    ("haproxy_timeout_server", "3٠s"), ("haproxy_backend_api_fallback", [{"name": "a b", "address": "x", "port": 1}]),
    ("haproxy_api_route_timeouts", {"/a": "1s\n"}), ("haproxy_api_route_timeouts", ["x"]),
    ("deploy_min_up", "50%%"), ("deploy_poll_interval", "nan"), ("monitoring_scrape_interval", "15 s"),
    ("address", ""), ("address", "-oProxyCommand=id"), ("ssh_port", "2２"), ("common_timezone", "../../etc/x"),
])
def test_wrong_types_and_grammars_are_one_line_each(name, value):
    problem = schema.value_problem(name, value)
    assert problem and problem.startswith(name) and "\n" not in problem


def test_secrets_take_any_one_line_but_never_a_control_character():
    assert schema.value_problem("backend_api_db_password", "p@ss w'rd\"$!") is None
    assert schema.value_problem("backend_api_db_password", "pw\nx") is not None


def test_unknown_set_key_names_the_closest():
    with pytest.raises(schema.values.InvalidValue, match="did you mean 'haproxy_maxconn'"):
        schema.check_set_keys({"haproxy_maxconns": 100})
    schema.check_set_keys({"haproxy_maxconn": 100, "ansible_user": "root"})


def _inventory(tmp_path, balancer_vars):
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"connection": "incus"}, "children": {
        "haproxy": {"hosts": {"lb-bad": {"address": "10.250.0.10", **balancer_vars}}},
        "backend_api_instances": {"hosts": {"api-ok": {"address": "10.250.0.21"}}}}}}))
    return path


def test_a_bad_host_refuses_the_tasks_that_target_it_and_only_those(tmp_path):
    """Attached to its host: haproxy.status (targets lb-bad) refuses; inventory.show lists it, marked."""
    inventory = _inventory(tmp_path, {"haproxy_maxconn": "٤٠٩٦"})
    done = subprocess.run([*INV, "haproxy.status", "--inventory", str(inventory)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "host 'lb-bad': haproxy_maxconn" in done.stderr, done
    shown = subprocess.run([*INV, "inventory.show", "--inventory", str(inventory)], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "lb-bad" in shown.stdout and "haproxy_maxconn" in shown.stdout, shown
