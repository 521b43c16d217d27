"""The balancer pair on the real lab: one VIP holder, identical haproxy.cfg, quiet re-runs, a reload is
not a death, the lock follows the first balancer that answers, and test.lb-failover passes.

Skipped with a reason when the inventory has one balancer (no lb_vip)."""

import json
import re
import time

import pytest

from conftest import inv
from fabfile.incus import instance_ref
from fabfile.incus_api import Incus
from fabfile.inventory import load_inventory
from fabfile.transports import connect
from fabfile.tasks import support

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def pair(deployed_lab):
    loaded = load_inventory(str(deployed_lab))
    settings = support.topology(loaded).pair
    if settings is None:
        pytest.skip("the inventory has one balancer and no lb_vip; the pair tests need haproxy-2 and lb_vip")
    return loaded, settings


def status(tmp_path, name="lb.json"):
    report = tmp_path / name
    done = inv("lb.status", "--report", str(report), check=False)
    return done, json.loads(report.read_text()) if report.exists() else None


def wait_for_one_holder(tmp_path, seconds=30):
    for _ in range(int(seconds)):
        done, report = status(tmp_path)
        if done.returncode == 0 and all(b["vrrp_state"] in ("MASTER", "BACKUP") for b in report["balancers"]):
            return report
        time.sleep(1)
    raise AssertionError(f"no single VIP holder with both nodes MASTER/BACKUP within {seconds}s: {done.stdout}")


def test_one_holder_and_identical_haproxy_cfg(pair, tmp_path):
    loaded, settings = pair
    report = wait_for_one_holder(tmp_path)
    assert len(report["holders"]) == 1 and report["vip"] == settings.vip
    digests = {connect(h).run("sha256sum /etc/haproxy/haproxy.cfg").stdout.split()[0] for h in loaded.group("haproxy")}
    assert len(digests) == 1


def test_setup_rerun_changes_nothing_and_keeps_the_vip(pair, tmp_path):
    inv("haproxy.setup")  # converge whatever earlier tests (--set overrides) left
    before = wait_for_one_holder(tmp_path)["holders"]
    again = inv("haproxy.setup")
    assert "handler: reload keepalived" not in again.stdout
    for name in ("haproxy", "haproxy-2"):
        assert re.search(rf"^{name}\s+: ok=\d+ changed=0 failed=0", again.stdout, re.M), again.stdout
    assert wait_for_one_holder(tmp_path)["holders"] == before


def test_a_haproxy_reload_is_not_a_death(pair, tmp_path):
    loaded, _ = pair
    holder = wait_for_one_holder(tmp_path)["holders"][0]
    transport = connect(loaded.hosts[holder])
    since = transport.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    transport.run("systemctl reload haproxy")
    time.sleep(3)  # longer than the frontend check's interval x fall
    assert wait_for_one_holder(tmp_path)["holders"] == [holder]
    journal = transport.run(f"journalctl -u keepalived --since '{since}' --no-pager -o cat").stdout
    assert "FAULT" not in journal, journal


def test_lock_lives_on_the_first_balancer_that_answers(pair, tmp_path):
    loaded, _ = pair
    first = loaded.group("haproxy")[0]
    ref = instance_ref(first.vars.get("incus_name", first.name), first.vars.get("incus_remote"))
    assert first.name in inv("lock.status").stdout
    Incus().run("stop", "--force", "--", ref, timeout=120)
    try:
        shown = inv("lock.status")
        assert "haproxy-2" in shown.stdout, shown.stdout
    finally:
        Incus().run("start", "--", ref, timeout=120)
    wait_for_one_holder(tmp_path, seconds=60)


def test_lb_failover_by_process_kill(pair, tmp_path):
    wait_for_one_holder(tmp_path)
    report = tmp_path / "lbf.json"
    done = inv("test.lb-failover", "--method", "process", "--report", str(report), "--plot", str(tmp_path / "lbf.svg"),
               check=False, timeout=300)
    result = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["vip_samples"]["two_holder_samples"] == 0
    assert result["vip_move_seconds"] is not None and result["websocket"]["reconnected_to"] == result["websocket"]["pinned_to"]
    # New connections after the move all succeed; a kept-alive connection to the killed haproxy loses
    # at most the one request it sends next (the step checks it), even when that is after the move.
    assert result["requests"]["phases"]["after_move"]["by_kind"]["new"]["failed"] == 0
    assert result["requests"]["by_kind"]["keepalive"]["failed"] <= result["requests"]["load"]["keepalive_connections"]
    assert result["browser_client"]["keepalive"]["total"] > 0
    # haproxy killed: its exporter stops answering, the monitor's alert fires and resolves within budget.
    alert = result["alert"]
    assert alert["alert"] == "VezaBalancerExporterDown" and alert["labels"] == {"instance": result["holder"]}
    assert alert["fire_within_budget"] and alert["resolve_within_budget"], alert
    assert alert["unwanted_seen"] == []  # the pair never went without exactly one VIP holder for long
    assert (tmp_path / "lbf.svg").read_text().startswith("<svg")
