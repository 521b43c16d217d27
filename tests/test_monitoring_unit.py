"""Monitoring without the lab: the alert gate on a fake clock, the failover sequence with it, the API parsers,
the rendered Prometheus config, the keepalived notify script."""

import io
import json
import subprocess

import pytest

from conftest import REPO
from fabfile.failover.checks import STEP_ALERT_FIRED, STEP_ALERT_QUIET, STEP_ALERT_RESOLVED, STEP_RECOVERY, FailoverSettings
from fabfile.failover.sequence import FailoverTest
from fabfile.inventory import load_inventory
from fabfile.monitoring import rules as alert_rules
from fabfile.monitoring.api import Alert, MonitorAPIError, parse_alerts, parse_targets
from fabfile.monitoring.gate import AlertExpectation, AlertGate
from fabfile.monitoring.settings import MonitoringSettings
from fabfile.output import Masker, Output
from fabfile.roles.monitoring import node_exporter_listen, prometheus_config, rules_for
from fabfile.templating import render
from fabfile.values import InvalidValue
from fakes import Clock
from test_failover_unit import VICTIM, FakeHttp, FakeRuntime, FakeStopper, World

EXPECTED = AlertExpectation("VezaServerDown", {"proxy": "api_pool", "server": VICTIM}, fire_budget=7.0,
                            resolve_budget=4.0)


def firing_between(clock, start, end, labels=None):
    """Alertmanager showing the expected alert from ``start`` until ``end`` (clock times)."""
    alert = Alert("VezaServerDown", labels or {"proxy": "api_pool", "server": VICTIM, "severity": "warning"}, "", "")
    return lambda: [alert] if start <= clock() < end else []


def gate(read, clock):
    return AlertGate(read, EXPECTED, {}, clock=clock, sleep=clock.sleep, poll=0.25)


def test_fired_and_resolved_within_budget_are_measured_from_the_fault_and_repair():
    clock = Clock()
    checks = gate(firing_between(clock, 104.0, 112.0), clock)
    assert checks.quiet().passed
    fired = checks.wait_fired(100.0)
    assert fired.passed and fired.data == {"alert_fire_seconds": 4.0, "alert_fire_budget_seconds": 7.0}
    clock.now = 110.5
    resolved = checks.wait_resolved(110.0)
    assert resolved.passed and resolved.data["alert_resolve_seconds"] == 2.0
    assert checks.marks == {"alert_fired": 104.0, "alert_resolved": 112.0}
    assert checks.report()["fire_within_budget"] and checks.report()["resolve_within_budget"]


def test_a_late_alert_is_measured_and_fails():
    clock = Clock()
    fired = gate(firing_between(clock, 109.0, 1e9), clock).wait_fired(100.0)
    assert not fired.passed and "9.00s" in fired.detail and "MISSED" in fired.detail
    assert fired.data["alert_fire_seconds"] == 9.0


def test_a_missing_alert_fails_after_a_bounded_wait():
    clock = Clock()
    calls = []

    def never():
        calls.append(clock())
        return []

    fired = gate(never, clock).wait_fired(100.0)
    assert not fired.passed and "not fired within 19.0s" in fired.detail
    assert clock() <= 100.0 + 2 * 7 + 5 + 0.5 and len(calls) <= (2 * 7 + 5) / 0.25 + 2


def test_another_servers_alert_does_not_count():
    clock = Clock()
    other = firing_between(clock, 101.0, 1e9, {"proxy": "api_pool", "server": "backend-api-2"})
    checks = gate(other, clock)
    clock.now = 102.0
    quiet = checks.quiet()
    assert quiet.passed and "also active: VezaServerDown" in quiet.detail
    assert not checks.wait_fired(102.0).passed


def test_already_firing_or_unreachable_is_not_quiet():
    clock = Clock()
    assert not gate(firing_between(clock, 0, 1e9), clock).quiet().passed

    def broken():
        raise MonitorAPIError("Alertmanager on monitor did not answer (exit 7); run inv monitor.setup")

    quiet = gate(broken, clock).quiet()
    assert not quiet.passed and "run inv monitor.setup" in quiet.detail


class FakeAlertmanager:
    """VezaServerDown for the victim ``fire_after`` s after HAProxy's DOWN, gone ``resolve_after`` s after UP."""

    def __init__(self, world, fire_after=3.0, resolve_after=1.0):
        self.world, self.fire_after, self.resolve_after = world, fire_after, resolve_after

    def alerts(self):
        w = self.world
        stopped = w.changed_at[VICTIM]
        if w.running[VICTIM]:
            firing = stopped > 0 and w.now < stopped + w.up_after + self.resolve_after and any(
                e == ("stop", VICTIM) for e in w.events)
        else:
            firing = w.now >= stopped + w.detect_after + self.fire_after
        return [Alert("VezaServerDown", {"proxy": "api_pool", "server": VICTIM}, "", "")] if firing else []


def run_failover(world, alertmanager):
    checks = AlertGate(alertmanager.alerts, EXPECTED, clock=world.clock, sleep=world.sleep)
    test = FailoverTest(FailoverSettings(victim=VICTIM, websocket=False, load=False), runtime=FakeRuntime(world),
                        stopper=FakeStopper(world), http_get=FakeHttp(world), output=Output(Masker(), io.StringIO()),
                        clock=world.clock, sleep=world.sleep, alerts=checks)
    return test.run()


def test_failover_holds_the_victim_down_until_the_alert_fired_and_reports_it():
    world = World(detect_after=1.0, up_after=3.0)
    report = run_failover(world, FakeAlertmanager(world, fire_after=3.0))
    names = [step["name"] for step in report["steps"]]
    assert names.index(STEP_ALERT_QUIET) < names.index(STEP_ALERT_FIRED) < names.index(STEP_RECOVERY) \
        < names.index(STEP_ALERT_RESOLVED)
    assert report["passed"], report["steps"]
    assert report["alert"]["fire_seconds"] == pytest.approx(3.0, abs=0.3)
    assert report["alert"]["resolve_seconds"] == pytest.approx(1.0, abs=0.3)
    timeline = report["timeline"]
    assert timeline["down"] < timeline["alert_fired"] <= timeline["start_issued"] < timeline["up"] < timeline["alert_resolved"]
    json.dumps(report)


def test_failover_fails_on_a_late_alert_and_still_brings_the_victim_back():
    world = World(detect_after=1.0, up_after=3.0)
    report = run_failover(world, FakeAlertmanager(world, fire_after=10.0))
    fired = next(step for step in report["steps"] if step["name"] == STEP_ALERT_FIRED)
    assert not report["passed"] and fired["status"] == "fail" and "MISSED" in fired["detail"]
    assert world.events == [("stop", VICTIM), ("start", VICTIM)]


# --- the API's answers ------------------------------------------------------------------

def test_parse_alerts_keeps_active_ones_only():
    text = json.dumps([
        {"labels": {"alertname": "VezaServerDown", "server": "b1", "proxy": "api_pool"}, "status": {"state": "active"},
         "startsAt": "2026-12-04T10:00:00Z", "annotations": {"summary": "b1 in api_pool is DOWN"}},
        {"labels": {"alertname": "VezaNodeExporterDown", "instance": "b1"}, "status": {"state": "suppressed"}},
    ])
    alerts = parse_alerts(text)
    assert [(a.name, a.labels) for a in alerts] == [("VezaServerDown", {"server": "b1", "proxy": "api_pool"})]
    assert alerts[0].matches("VezaServerDown", {"server": "b1"}) and not alerts[0].matches("VezaServerDown", {"server": "b2"})
    with pytest.raises(MonitorAPIError):
        parse_alerts("<html>proxy error</html>")


def test_parse_targets():
    text = json.dumps({"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "node", "instance": "haproxy"}, "scrapeUrl": "http://10.0.0.1:9100/metrics",
         "health": "down", "lastError": "context deadline exceeded"}]}})
    (target,) = parse_targets(text)
    assert (target.job, target.instance, target.health, target.last_error) == \
        ("node", "haproxy", "down", "context deadline exceeded")


# --- what monitor.setup renders -----------------------------------------------------------

INVENTORY = """\
all:
  vars: {connection: incus, lab_subnet: 10.9.0.0/24}
  children:
    haproxy:
      vars: {lb_vip: 10.9.0.100, haproxy_metrics_bind: "0.0.0.0:8405"}
      hosts:
        lb1: {address: 10.9.0.10}
        lb2: {address: 10.9.0.11}
    backend_api_instances:
      vars: {deploy_min_up: 1}
      hosts:
        api1: {address: 10.9.0.21}
        api2: {address: 10.9.0.22}
    monitoring:
      vars: {monitoring_scrape_interval: 1s}
      hosts:
        mon: {address: 10.9.0.40}
"""


@pytest.fixture
def inventory_file(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(INVENTORY)
    return path

def test_prometheus_config_scrapes_every_host_and_both_balancers(inventory_file):
    inventory = load_inventory(str(inventory_file))
    settings = MonitoringSettings.from_vars(inventory.group("monitoring")[0].vars)
    text = prometheus_config(inventory, settings, "monitor")
    import yaml

    config = yaml.safe_load(text)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    nodes = {c["labels"]["instance"]: c["targets"] for c in jobs["node"]["static_configs"]}
    assert nodes == {name: [f"{host.address}:9100"] for name, host in inventory.hosts.items()}
    balancers = {c["labels"]["instance"]: c["targets"] for c in jobs["haproxy"]["static_configs"]}
    assert balancers == {"lb1": ["10.9.0.10:8405"], "lb2": ["10.9.0.11:8405"]}
    assert config["global"]["scrape_interval"] == "1s" and config["rule_files"] == ["/etc/prometheus/veza-alerts.rules.yml"]
    rules = rules_for(inventory, settings)
    assert {rule.alert for rule in rules} >= {alert_rules.VIP_HOLDERS, alert_rules.BELOW_FLOOR}


def test_an_address_that_would_add_a_line_is_refused(inventory_file):
    inventory_file.write_text(INVENTORY.replace("{address: 10.9.0.21}", '{address: "10.9.0.21\\n  - job_name: evil"}'))
    inventory = load_inventory(str(inventory_file))
    with pytest.raises(InvalidValue) as caught:
        prometheus_config(inventory, MonitoringSettings.from_vars({}), "monitor")
    assert "\n" not in str(caught.value)


def test_node_exporter_binds_the_hosts_own_address_when_it_has_one(inventory_file):
    inventory = load_inventory(str(inventory_file))
    assert node_exporter_listen(inventory.hosts["lb1"], 9100) == "10.9.0.10:9100"


# --- keepalived's notify script -------------------------------------------------------------

@pytest.mark.parametrize("state, held", [("MASTER", "1"), ("BACKUP", "0"), ("FAULT", "0"), ("STOP", "0")])
def test_notify_script_writes_whether_the_node_holds_the_vip(tmp_path, state, held):
    script = tmp_path / "notify"
    script.write_text(render("keepalived/vrrp-notify.sh.j2", {"textfile_dir": str(tmp_path / "textfile"),
                                                              "metric": "veza_keepalived_vip_held"}))
    subprocess.run(["sh", str(script), "INSTANCE", 'veza_lb"} 9\n', state, "100"], check=True, timeout=10)
    lines = (tmp_path / "textfile" / "veza-keepalived.prom").read_text().splitlines()
    assert f'veza_keepalived_vip_held{{vrrp_instance="veza_lb9",state="{state}"}} {held}' in lines
    assert [p.name for p in (tmp_path / "textfile").iterdir()] == ["veza-keepalived.prom"]
    subprocess.run(["sh", str(script), "GROUP", "g", "MASTER", "100"], check=True, timeout=10)  # groups: ignored
    assert f"state=\"{state}\"" in (tmp_path / "textfile" / "veza-keepalived.prom").read_text()


def test_an_unwanted_alert_seen_in_any_read_fails_stayed_silent():
    clock = Clock()
    vip = Alert("VezaVipHoldersNotOne", {"vip": "10.0.0.100"}, "", "")
    mine = Alert("VezaServerDown", {"proxy": "api_pool", "server": VICTIM}, "", "")
    answers = iter([[], [vip, mine], [mine], []])
    checks = AlertGate(lambda: next(answers), EXPECTED, clock=clock, sleep=clock.sleep, unwanted=("VezaVipHoldersNotOne",))
    assert checks.quiet().passed and checks.wait_fired(100.0).passed  # the VIP alert rode along in that read
    silent = checks.stayed_silent()
    assert not silent.passed and "VezaVipHoldersNotOne fired" in silent.detail
    quiet = AlertGate(lambda: [], EXPECTED, clock=clock, sleep=clock.sleep, unwanted=("VezaVipHoldersNotOne",))
    assert quiet.stayed_silent().passed
