"""test.host-failover on the real two-host lab: the second Incus host stopped, cut off the lab bridge and
(interrupted) frozen under load; its servers DOWN on the surviving balancer within the budget, no failed
new-connection request outside a VIP move, the host always back with its servers UP.

Skipped with a reason when the inventory has no second Incus host (lab_incus_hosts)."""

import json
import signal
import subprocess
import time

import pytest

from conftest import INV, REPO, end_process, inv
from fabfile.incus_api import Incus
from fabfile.inventory import load_inventory

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def second_host(deployed_lab):
    loaded = load_inventory(str(deployed_lab))
    entries = next(iter(loaded.hosts.values())).vars.get("lab_incus_hosts") or []
    if not entries:
        pytest.skip("the inventory has no lab_incus_hosts: no second Incus host to take out")
    host = entries[0]["name"]
    on_host = [h.name for h in loaded.hosts.values() if h.vars.get("incus_remote") == host]
    yield host, on_host
    # The lab is shared: leave every server UP on every balancer, as the next module's pre-flight wants it
    # (a resumed host's servers stay DOWN until HAProxy's checks pass again).
    assert wait_all_up(90), "servers still not UP on every balancer 90 s after the host came back"


def wait_all_up(seconds):
    """Poll haproxy.status (bounded) until every server row on every balancer says UP; True if it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = inv("haproxy.status", check=False, timeout=60).stdout.splitlines()[1:]
        if rows and all(len(row.split()) > 3 and row.split()[3] == "UP" for row in rows):
            return True
        time.sleep(1)
    return False


def outer_status(host):
    return Incus().query(f"/1.0/instances/{host}/state")["status"]


def check_report(result, host, on_host):
    """What an operator reads in the report, checked from its raw parts (samples, transitions)."""
    budget = result["settings"]["down_budget"]
    servers = {entry["server"] for entry in result["instances"]}
    assert servers and servers <= set(on_host), (servers, on_host)
    for entry in result["instances"]:
        downs = [c["t"] for c in entry["transitions"] if c["t"] >= 0 and c["status"] == "DOWN"]
        assert downs and downs[0] <= budget, entry  # DOWN on the survivor within the budget of t0
        assert entry["transitions"][-1]["status"] == "UP", entry
    samples = result["requests"]["samples"]
    window = result["requests"]["vip_move_window"] or [0, -1]  # none: the survivor held the VIP throughout
    failed_new = [s for s in samples if s["kind"] == "new" and not s["ok"] and not window[0] <= s["t"] <= window[1]]
    assert failed_new == []
    kept = [s for s in samples if s["kind"] == "keepalive"]
    assert kept and sum(not s["ok"] for s in kept) <= result["requests"]["load"]["keepalive_connections"]
    assert result["survivor"] not in on_host and result["host"] == host
    holders = [node for node, points in result["vip"]["per_node"].items() if points and points[-1][1]]
    assert len(holders) == 1  # one VIP holder at the end, wherever keepalived put it


def test_stopping_the_second_host_fails_over_and_back(second_host, tmp_path):
    host, on_host = second_host
    report, plot = tmp_path / "stop.json", tmp_path / "stop.svg"
    done = inv("test.host-failover", "--method", "stop", "--settle", "5", "--report", str(report), "--plot", str(plot),
               check=False, timeout=400)
    result = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["stop_command"] == f"incus stop --force -- {host}"
    check_report(result, host, on_host)
    assert result["host_back_seconds"] is not None and outer_status(host) == "Running"
    assert plot.read_text().startswith("<svg")


def test_cutting_the_second_host_off_the_lab_bridge_fails_over_and_back(second_host, tmp_path):
    host, on_host = second_host
    report = tmp_path / "cut.json"
    done = inv("test.host-failover", "--method", "cut", "--settle", "3", "--report", str(report), check=False,
               timeout=400)
    result = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["stop_command"].startswith("ip link set dev ") and result["stop_command"].endswith(" down")
    check_report(result, host, on_host)


def test_sigterm_while_the_host_is_frozen_brings_it_back(second_host, tmp_path):
    host, _ = second_host
    report = tmp_path / "int.json"
    process = subprocess.Popen([*INV, "test.host-failover", "--method", "freeze", "--dwell", "30", "--report",
                                str(report)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        for _ in range(120):  # until the host is frozen (pre-flight and lead-in first), at most 60 s
            if outer_status(host) == "Frozen" or process.poll() is not None:
                break
            time.sleep(0.5)
        assert outer_status(host) == "Frozen", process.communicate(timeout=60)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            end_process(process)
    assert process.returncode == 143, out + err
    assert outer_status(host) == "Running"
    result = json.loads(report.read_text())
    assert result["interrupted"] and not result["passed"]
    restored = [s for s in result["steps"] if s["name"] == "cleanup: host brought back"]
    assert restored and restored[0]["passed"], result["steps"]
    assert "Traceback" not in out + err


def test_status_with_the_second_host_frozen_shows_every_other_instance(second_host):
    """An outage is when an operator reads api.status: the instances that answer keep their rows and HAProxy's
    view (from the balancer that answers), the frozen host's instances say unreachable, one error line each,
    exit 1. The host is resumed whatever happens."""
    host, on_host = second_host
    Incus().run("pause", "--", host, timeout=60)
    try:
        done = inv("api.status", check=False, timeout=180)
    finally:
        Incus().run("resume", "--", host, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.startswith("backend-api")}
    pool = [h.name for h in load_inventory(str(REPO / "hosts.yaml")).group("backend_api_instances")]
    assert set(rows) == set(pool), done.stdout
    for name in pool:
        if name in on_host:
            assert "unreachable" in rows[name] and f"error: {name}:" in done.stderr
        else:
            assert " 200 " in rows[name] and " UP " in rows[name], rows[name]  # HAProxy's view from the survivor
    assert outer_status(host) == "Running"
