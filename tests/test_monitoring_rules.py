"""The alert rules under promtool: `promtool test rules` (tests/promtool/), `promtool check rules` on what
`inv monitor.rules` writes from the lab inventory, and the settings' refusals.

promtool comes from Debian's prometheus package, the same 2.42 the monitor host runs: `make host-deps`
extracts it into .lab/tools/ (no Prometheus daemon on the machine that runs the tests). Without it these
tests skip, unless VEZA_REQUIRE_TOOLCHAINS=1 (CI), where that is a failure.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, assert_one_error_line, inv
from fabfile.capacity import CapacityFloor
from fabfile.inventory import load_inventory
from fabfile.monitoring import rules
from fabfile.monitoring.gate import expect_balancer_down, expect_server_down
from fabfile.monitoring.settings import MonitoringSettings
from fabfile.values import InvalidValue

TESTS = REPO / "tests" / "promtool"
# The settings tests/promtool/veza-alerts.test.yml is written for.
TEST_SETTINGS = {"monitoring_evaluation_interval": "5s", "monitoring_pool_empty_for": "15s",
                 "monitoring_below_floor_for": "30s", "monitoring_server_down_for": "1m",
                 "monitoring_node_down_for": "1m", "monitoring_balancer_down_for": "30s",
                 "monitoring_vip_holders_for": "15s", "monitoring_5xx_share": 0.05, "monitoring_5xx_window": "5m",
                 "monitoring_5xx_for": "2m", "monitoring_check_failures": 3, "monitoring_check_failures_window": "5m"}
TEST_FLOORS = [CapacityFloor("api_pool", 3, 2), CapacityFloor("stream_pool", 2, 1)]


def promtool() -> str:
    found = os.environ.get("VEZA_PROMTOOL") or shutil.which("promtool") or str(REPO / ".lab" / "tools" / "promtool")
    if not Path(found).is_file():
        reason = "promtool not found (make host-deps extracts it into .lab/tools/)"
        if os.environ.get("VEZA_REQUIRE_TOOLCHAINS") == "1":
            pytest.fail(reason + "; VEZA_REQUIRE_TOOLCHAINS=1", pytrace=False)
        pytest.skip(reason)
    return found


def run_promtool(*args):
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def test_promtool_unit_tests_of_every_rule(tmp_path):
    settings = MonitoringSettings.from_vars(TEST_SETTINGS)
    rule_list = rules.alert_rules(settings, TEST_FLOORS, "10.0.0.100")
    (tmp_path / rules.RULES_FILE).write_text(rules.render(rule_list))
    shutil.copy(TESTS / "veza-alerts.test.yml", tmp_path)
    tested = (TESTS / "veza-alerts.test.yml").read_text()
    untested = [rule.alert for rule in rule_list if f"alertname: {rule.alert}" not in tested]
    assert not untested, f"rules without a promtool test: {untested}"
    done = run_promtool("test", "rules", str(tmp_path / "veza-alerts.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_a_broken_expectation_fails_promtool(tmp_path):
    """The unit tests can fail: a rule with a longer `for` than the tests expect is caught."""
    settings = MonitoringSettings.from_vars({**TEST_SETTINGS, "monitoring_server_down_for": "2m"})
    (tmp_path / rules.RULES_FILE).write_text(rules.render(rules.alert_rules(settings, TEST_FLOORS, "10.0.0.100")))
    shutil.copy(TESTS / "veza-alerts.test.yml", tmp_path)
    done = run_promtool("test", "rules", str(tmp_path / "veza-alerts.test.yml"))
    assert done.returncode != 0 and "VezaServerDown" in done.stdout + done.stderr


def test_monitor_rules_writes_what_promtool_accepts(tmp_path):
    out = tmp_path / "rules"
    done = inv("monitor.rules", "--out", str(out))
    assert f"wrote {out / rules.RULES_FILE}" in done.stdout
    text = (out / rules.RULES_FILE).read_text()
    for name in (rules.POOL_EMPTY, rules.BELOW_FLOOR, rules.SERVER_DOWN, rules.HIGH_5XX, rules.CHECK_FAILURES,
                 rules.NODE_DOWN, rules.BALANCER_DOWN, rules.VIP_HOLDERS):
        assert f"alert: {name}" in text, name
    checked = run_promtool("check", "rules", str(out / rules.RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scrape = (out / "veza-prometheus.yml").read_text()
    hosts = load_inventory(str(REPO / "hosts.yaml")).hosts
    for balancer in ("haproxy", "haproxy-2"):  # both balancers' exporters
        assert f'"{hosts[balancer].address}:8405"' in scrape
    for host in hosts.values():  # a node exporter on every host, the monitor's own included
        assert f'"{host.address}:9100"' in scrape


def test_monitor_rules_needs_out_and_refuses_bad_values(tmp_path):
    assert_one_error_line(inv("monitor.rules", check=False), 2, "--out")
    assert_one_error_line(inv("monitor.rules", "--out", str(tmp_path), "--set", "monitoring_server_down_for=soon",
                              check=False), 2, "monitoring_server_down_for", "soon")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, value", [
    ("monitoring_scrape_interval", "1 s"), ("monitoring_scrape_interval", "0s"), ("monitoring_5xx_share", 5),
    ("monitoring_5xx_share", "0"), ("monitoring_check_failures", "many"), ("monitoring_webhook_log", "log.jsonl"),
    ("monitoring_prometheus_port", 9093), ("monitoring_server_down_for", "1m\n- alert: x"),
    ("monitoring_node_exporter_collectors", ["cpu"]), ("monitoring_node_exporter_collectors", "textfile"),
    ("monitoring_node_exporter_collectors", ["textfile", "cpu --web.listen-address=:1"]),
])
def test_settings_refuse_values_that_do_not_fit(name, value):
    with pytest.raises(InvalidValue) as caught:
        MonitoringSettings.from_vars({name: value})
    assert "\n" not in str(caught.value)


def test_budgets_add_scrape_evaluation_and_slack():
    settings = MonitoringSettings.from_vars({"monitoring_scrape_interval": "1s", "monitoring_evaluation_interval": "1s",
                                             "monitoring_server_down_for": "3s", "monitoring_balancer_down_for": "3s",
                                             "monitoring_alert_slack": "2s"})
    rule_list = rules.alert_rules(settings, TEST_FLOORS, None)
    down = expect_server_down(settings, rule_list, "api_pool", "backend-api-1")
    assert (down.fire_budget, down.resolve_budget) == (3 + 1 + 1 + 2, 1 + 1 + 2)
    balancer = expect_balancer_down(settings, rule_list, "haproxy")  # a dead target also costs the scrape timeout
    assert (balancer.fire_budget, balancer.resolve_budget) == (3 + 1 + 1 + 1 + 2, 1 + 1 + 1 + 2)
    assert rules.VIP_HOLDERS not in {rule.alert for rule in rule_list}  # no VIP, no pair rule
