"""test.failover end to end on the Incus lab: HAProxy + both API backends deployed (fixture deployed_lab).

Calls the task function in-process (the same code `inv test.failover` runs) and
judges the JSON report it writes.
"""

import json
import xml.etree.ElementTree as ET

import pytest
from invoke import Context
from invoke.exceptions import Exit

from fabfile.inventory import load_inventory
from fabfile.tasks.test import failover as test_tasks
from fabfile.transports import connect
from conftest import REPO

pytestmark = pytest.mark.lab

DOWN_TIMEOUT = 30.0


def run_failover(tmp_path, **flags):
    """Run the task; return (exit code, report dict)."""
    report_path = tmp_path / "failover.json"
    code = 0
    try:
        test_tasks.failover(Context(), report=str(report_path), plot=str(tmp_path / "failover.svg"),
                            down_timeout=DOWN_TIMEOUT, **flags)
    except Exit as exc:
        code = exc.code
    return code, json.loads(report_path.read_text())


def failed_steps(report):
    return [f"{s['name']}: {s['detail']}" for s in report["steps"] if not s["passed"]]


def test_failover_sequence_passes_on_the_lab(deployed_lab, tmp_path):
    code, report = run_failover(tmp_path)
    assert code == 0 and report["passed"], failed_steps(report)
    assert report["stop_method"] == "incus"
    assert 0 < report["detect_down_seconds"] <= DOWN_TIMEOUT
    assert report["recover_up_seconds"] is not None
    down_window = next(s for s in report["steps"] if s["name"].startswith("4 "))
    assert down_window["data"]["failed"] == 0 and down_window["data"]["ok"] == 5
    requests = report["requests"]
    assert requests["total"] > 0 and requests["failed"] == 0, requests["by_phase"]
    assert set(requests["by_phase"]) == {"before_kill", "kill_to_down", "down_window", "recovery"}
    websocket = report["websocket"]
    assert len(websocket["checks"]) == 4 and all(c["passed"] for c in websocket["checks"].values()), websocket
    assert websocket["seen"]["rebalanced"]["set_cookie"] == "backend-api-2"
    assert all(row["status"] == "UP" for row in report["final_pool"])
    # The lab inventory sets haproxy_metrics_bind: HAProxy's exporter saw the same DOWN, counted once.
    metrics = report["metrics"]
    assert metrics["enabled"], "set haproxy_metrics_bind on the lab's haproxy host"
    assert metrics["seen"]["before"]["status_up"] == 1 and metrics["seen"]["down"]["status_down"] == 1, metrics
    assert metrics["seen"]["down"]["up_down_rise"] == 1 and metrics["seen"]["down"]["seconds_after_down"] <= 1.0
    # The monitor (hosts.yaml's monitoring group): the victim's alert fired and resolved within its budgets.
    alert = report["alert"]
    assert alert["alert"] == "VezaServerDown" and alert["labels"] == {"proxy": "api_pool", "server": "backend-api-1"}
    assert alert["fire_within_budget"] and alert["resolve_within_budget"], alert
    assert report["timeline"]["down"] < report["timeline"]["alert_fired"] < report["timeline"]["alert_resolved"]
    ET.parse(tmp_path / "failover.svg")  # a well-formed picture


def test_failover_by_unit_stop_on_the_lab(deployed_lab, tmp_path):
    """The ssh inventories' method (kill + stop the unit), here through incus exec; seed checks only."""
    code, report = run_failover(tmp_path, stop_method="unit", websocket=False, load=False, victim="backend-api-2")
    assert code == 0 and report["passed"], failed_steps(report)
    assert report["stop_method"] == "unit" and report["detect_down_seconds"] <= DOWN_TIMEOUT
    assert all(row["status"] == "UP" for row in report["final_pool"])


def post_ids_seen(hosts, prefix: str) -> dict:
    """Backend name -> the background POST ids its access log (the unit's journal) shows."""
    inventory = load_inventory(REPO / "hosts.yaml")
    seen = {}
    for name in hosts:
        result = connect(inventory.hosts[name]).run(
            f"journalctl -u veza-backend-api --since -10min -o cat --no-pager | grep -oE 'id={prefix}-(ka-)?[0-9]+' || true")
        seen[name] = [line.split("=", 1)[1] for line in result.stdout.split()]
    return seen


@pytest.mark.parametrize("method, victim", [("freeze", "backend-api-2"), ("drop", "backend-api-1")])
def test_silent_failures_cost_no_get_and_replay_no_post(deployed_lab, tmp_path, method, victim):
    """A hung process and a silent network drop, with GETs and POSTs flowing: no GET fails (budgets and
    replays), POSTs caught at the failure are counted apart and never reach a second backend."""
    code, report = run_failover(tmp_path, stop_method=method, victim=victim)
    assert code == 0 and report["passed"], failed_steps(report)
    requests = report["requests"]
    assert requests["by_method"]["GET"].get("ok", 0) > 0 and set(requests["by_method"]["GET"]) == {"ok"}, requests
    assert requests["by_method"]["POST"].get("ok", 0) > 0, requests  # unsafe traffic was really flowing
    websocket = report["websocket"]["seen"]
    assert websocket["closed"]["closed"] and websocket["rebalanced"]["instance"] != victim, websocket
    pool = [host.name for host in load_inventory(REPO / "hosts.yaml").group("backend_api_instances")]
    seen = post_ids_seen(pool, requests["post_id_prefix"])
    on_survivors = {post_id for name in pool if name != victim for post_id in seen[name]}
    twice = set(seen[victim]) & on_survivors
    assert not twice, f"POSTs replayed on two backends: {sorted(twice)}"
    caught = {entry["id"] for entry in requests["unsafe_caught_in_failure_window"]}
    assert not caught & on_survivors, "caught POSTs replayed on a surviving backend"
    ok_posts = [s for s in requests["samples"] if s["method"] == "POST" and s["outcome"] == "ok"]
    assert len(set(seen[victim]) | on_survivors) >= len(ok_posts)
    # The victim is whole again: running (not stopped by a signal), no drop table left behind.
    victim_host = connect(load_inventory(REPO / "hosts.yaml").hosts[victim])
    state = victim_host.run("ps -o stat= -p \"$(systemctl show -p MainPID --value veza-backend-api)\"").stdout.strip()
    assert not state.startswith("T"), state
    assert victim_host.run("nft list table inet veza_failover_drop", warn=True).exited != 0
    assert all(row["status"] == "UP" for row in report["final_pool"])
