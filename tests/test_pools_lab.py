"""Issue 15 on the lab: batch deploys keep the floor, bad batching changes nothing, site.setup re-runs are no-ops."""

import json
import time

import pytest

from conftest import REPO, build_demo, inv
from test_deploy_lab import PoolWatcher

from fabfile.haproxy_runtime import RuntimeAPI
from fabfile.inventory import load_inventory
from fabfile.loadtest.facade import BackgroundLoad
from fabfile.loadtest.outcomes import OK
from fabfile.transports import connect

pytestmark = pytest.mark.lab


API_POOL_SIZE = len(load_inventory(str(REPO / "hosts.yaml")).group("backend_api_instances"))


def audit_lines():
    return inv("audit", "--last", "1000").stdout.count("\n")


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "error: --batch: 0 must be from 1"),
    (["--batch", "150%"], "error: --batch: 150% must be from 1% to 100%"),
    (["--set", "deploy_min_up=100%"], f"error: deploy_min_up: 100% keeps all {API_POOL_SIZE} servers of api_pool UP"),
    (["--max-fail", "0"], "error: --max-fail: 0 must be from 1"),
    # a per-host floor at least as big as some host's share of the pool: its servers could never go out
    (["--set", f"deploy_min_up_per_host={API_POOL_SIZE}"], f"error: deploy_min_up_per_host: {API_POOL_SIZE} keeps all"),
])
def test_bad_batching_is_one_error_line_exit_2_and_nothing_changed(deployed_lab, flags, message):
    before = inv("api.status").stdout
    lines = audit_lines()
    done = inv("api.deploy", "--binary", str(build_demo("api", "v2")), *flags, check=False)
    assert done.returncode == 2 and done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert inv("api.status").stdout == before and audit_lines() == lines  # no lock taken, nothing touched


def versions() -> dict:
    """instance -> version its health endpoint reports, from api.status."""
    rows = inv("api.status").stdout.splitlines()[1:]
    return {row.split()[0]: row.split()[2] for row in rows if row.strip() and not row.startswith(("fix", "warning", "weights", "canary"))}


def test_batch_deploy_and_rollback_converge_within_the_floor(deployed_lab, tmp_path):
    """Two instances, floor 1: --batch 50% goes one at a time and both end on the target; rollback returns."""
    before = versions()
    target = f"batch{int(time.time())}"  # a version no earlier test deployed: both instances change
    report = tmp_path / "deploy.json"
    inv("api.deploy", "--binary", str(build_demo("api", target)), "--batch", "50%", "--report", str(report))
    outcomes = json.loads(report.read_text())["instances"]
    assert {o["status"] for o in outcomes} <= {"changed", "ok"}
    assert all(o["state"] == "ready (UP)" for o in outcomes)
    assert set(versions().values()) == {target}
    inv("api.rollback", "--batch", "100%")  # the floor (1 of 2) still caps it at one instance out
    assert versions() == before and inv("api.status").stdout.count(" UP ") == len(before)


def test_site_setup_re_run_changes_nothing(deployed_lab, tmp_path):
    report = tmp_path / "site.json"
    inv("site.setup", "--report", str(report))
    recap = json.loads(report.read_text())["recap"]
    assert len(recap) == len(load_inventory(str(deployed_lab)).hosts) and all(counts["changed"] == 0 and counts["failed"] == 0 for counts in recap.values())


# -- pipelined soak: the next batch goes out while the previous one soaks, when the floor allows it -------

def deploy_watched(lab, *args):
    """``inv api.deploy *args`` while 20 req/s go through HAProxy and its pool is sampled every 0.15 s
    (finer than the bench's 0.3 s): (the run, UP servers in each sample, failed requests)."""
    balancer = load_inventory(str(lab)).hosts["haproxy"]
    load = BackgroundLoad(f"http://{balancer.address}:80", "/api/v1/health", rate=20, timeout=2, max_seconds=120)
    with PoolWatcher(RuntimeAPI(connect(balancer)), "api_pool") as watcher:
        load.start()
        try:
            done = inv("api.deploy", *args, check=False)
        finally:
            load.stop()
    ups = [sum(status == "UP" for status in snap.values()) for snap in watcher.snapshots]
    return done, ups, [sample for sample in load.samples if sample.outcome != OK]


def wait_all_up(count=API_POOL_SIZE, seconds=10):
    for _ in range(int(seconds / 0.5)):
        if inv("api.status").stdout.count(" UP ") == count:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("floor, overlaps", [(str(API_POOL_SIZE - 1), False), ("0", True)],
                         ids=["floor-all-but-one-one-soak-after-the-other", "floor-0-overlap"])
def test_pipelined_soak_keeps_the_floor_and_every_request(deployed_lab, floor, overlaps):
    """One at a time: with the floor at all servers but one, backend-api-2 waits for backend-api-1's soak;
    with deploy_min_up=0 it goes out while backend-api-1 soaks, which stays in rotation. Either way at least
    one server UP in every sample and no failed request; all end on the target."""
    target = f"pipe{floor}x{int(time.time())}"
    done, ups, failed = deploy_watched(deployed_lab, "--binary", str(build_demo("api", target)),
                                       "--set", f"deploy_min_up={floor}", "--set", "deploy_soak_seconds=3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("-- batch of 1: backend-api-2 (while backend-api-1 soaks)" in done.stdout) == overlaps, done.stdout
    assert len(ups) > 10 and min(ups) >= 1 and not failed, (ups, failed[:3])
    assert set(versions().values()) == {target}


def test_a_crash_in_the_soak_stops_the_batch_in_flight_too(deployed_lab, tmp_path):
    """deploy_min_up=0: backend-api-2 goes out while backend-api-1 soaks; the build crashes 3 s after it
    starts, inside backend-api-1's soak: backend-api-1 is rolled back, backend-api-2 (in flight or soaking)
    is stopped and put back on its previous binary too, exit 1, both in the report; both UP again."""
    before = versions()
    crashing = build_demo("api", f"pipecrash{int(time.time())}", "--crash-after", "3")
    report = tmp_path / "deploy.json"
    done = inv("api.deploy", "--binary", str(crashing), "--set", "deploy_min_up=0", "--set", "deploy_soak_seconds=5",
               "--report", str(report), check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "-- batch of 1: backend-api-2 (while backend-api-1 soaks)" in done.stdout
    assert "backend-api-1: crashed inside the 5s soak" in done.stdout
    assert "-- stopping: " in done.stdout and "Traceback" not in done.stdout + done.stderr
    outcomes = {o["name"]: o for o in json.loads(report.read_text())["instances"]}
    assert outcomes["backend-api-1"]["status"] == "rolled-back"
    # Swapped already (rolled back to .prev) or not yet (back to ready on the old binary): wherever the stop found it.
    assert outcomes["backend-api-2"]["status"] in ("rolled-back", "failed"), outcomes["backend-api-2"]
    assert outcomes["backend-api-2"]["detail"].startswith(("stopped: backend-api-1 failed", "backend-api-2: crashed"))
    assert wait_all_up() and versions() == before
