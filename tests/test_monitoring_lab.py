"""monitor.setup on the lab: idempotent, every target up and nothing firing when healthy; a stopped stream
server raises VezaServerDown in Alertmanager within its budget, our webhook logs the notification, and it
resolves once the server is back. (test.failover and test.lb-failover check their own alerts.)"""

import re
import time

import pytest

from conftest import REPO, assert_one_error_line, inv
from fabfile.inventory import load_inventory
from fabfile.monitoring.api import parse_notifications
from fabfile.monitoring.gate import AlertGate, expect_server_down
from fabfile.roles.monitoring import rules_for
from fabfile.tasks.monitor import monitor_api
from fabfile.transports import connect

pytestmark = pytest.mark.lab

VICTIM = "stream-server-2"


def changed_per_host(stdout: str) -> dict:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s*: ok=\d+ changed=(\d+) failed=0", stdout, re.M)}


def wait_healthy(seconds=60):
    """monitor.status exit 0 (every target up, no alert) within ``seconds``; the last run."""
    deadline = time.monotonic() + seconds
    while True:
        done = inv("monitor.status", check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(2)


def test_setup_rerun_changes_nothing(deployed_lab):
    done = inv("monitor.setup")
    hosts = load_inventory(str(REPO / "hosts.yaml")).hosts
    assert changed_per_host(done.stdout) == {name: 0 for name in hosts}, done.stdout
    checked = inv("monitor.setup", "--check")
    assert set(changed_per_host(checked.stdout).values()) == {0}, checked.stdout


def test_healthy_lab_every_target_up_nothing_firing(deployed_lab):
    done = wait_healthy()
    assert done.returncode == 0, done.stdout + done.stderr
    hosts = load_inventory(str(REPO / "hosts.yaml")).hosts
    assert f"targets: {len(hosts) + 2 + 2}/{len(hosts) + 2 + 2} up" in done.stdout  # nodes, 2 balancers, prom + am
    assert "alerts firing: 0" in done.stdout


def test_bad_value_is_refused_before_any_host_is_touched(deployed_lab):
    before = connect(load_inventory(str(REPO / "hosts.yaml")).hosts["monitor"]).run(
        "sha256sum /etc/prometheus/veza-alerts.rules.yml").stdout
    done = inv("monitor.setup", "--set", "monitoring_server_down_for=1m; rm -rf /", check=False)
    assert_one_error_line(done, 2, "monitoring_server_down_for")
    after = connect(load_inventory(str(REPO / "hosts.yaml")).hosts["monitor"]).run(
        "sha256sum /etc/prometheus/veza-alerts.rules.yml").stdout
    assert before == after


def test_stopped_stream_server_fires_and_resolves_and_the_webhook_logs_both(deployed_lab):
    assert wait_healthy().returncode == 0
    inventory = load_inventory(str(REPO / "hosts.yaml"))
    api = monitor_api(inventory)
    gate = AlertGate(api.alerts, expect_server_down(api.settings, rules_for(inventory, api.settings), "stream_pool",
                                                    VICTIM))
    assert gate.quiet().passed
    victim = connect(inventory.hosts[VICTIM])
    exporter = f"http://{inventory.hosts['haproxy'].address}:8405/metrics"

    def state(wanted):
        return f"curl -s {exporter} | grep -F 'proxy=\"stream_pool\",server=\"{VICTIM}\",state=\"{wanted}\"}} 1' >/dev/null"
    monitor = connect(inventory.hosts["monitor"])

    def wait_state(wanted):
        for _ in range(300):  # 30 s
            if monitor.run(state(wanted), warn=True).exited == 0:
                return time.monotonic()
            time.sleep(0.1)
        raise AssertionError(f"{VICTIM} never {wanted} in HAProxy's exporter")

    lines_before = int(monitor.run(f"wc -l < {api.settings.webhook_log} 2>/dev/null || echo 0").stdout)
    victim.run("systemctl stop veza-stream-server")
    try:
        fired = gate.wait_fired(wait_state("DOWN"))
    finally:
        victim.run("systemctl start veza-stream-server")
    assert fired.passed, fired.detail
    resolved = gate.wait_resolved(wait_state("UP"))
    assert resolved.passed, resolved.detail
    # The webhook got the firing notification and, group_interval later, the resolved one.
    deadline = time.monotonic() + 2 * api.settings.group_interval.seconds + 10
    statuses = []
    while time.monotonic() < deadline and "resolved" not in statuses:
        time.sleep(1)
        new = parse_notifications(monitor.run(f"tail -n +{lines_before + 1} {api.settings.webhook_log}").stdout)
        statuses = [note["notification"]["status"] for note in new
                    if any(a["labels"].get("server") == VICTIM and a["labels"]["alertname"] == "VezaServerDown"
                           for a in note["notification"]["alerts"])]
    assert statuses[:1] == ["firing"] and "resolved" in statuses, statuses
