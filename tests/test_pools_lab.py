"""Issue 15 on the lab: batch deploys keep the floor, bad batching changes nothing, site.setup re-runs are no-ops."""

import json
import time

import pytest

from conftest import build_demo, inv

from fabfile.inventory import load_inventory

pytestmark = pytest.mark.lab


def audit_lines():
    return inv("audit", "--last", "1000").stdout.count("\n")


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "error: --batch: 0 must be from 1"),
    (["--batch", "150%"], "error: --batch: 150% must be from 1% to 100%"),
    (["--set", "deploy_min_up=100%"], "error: deploy_min_up: 100% keeps all 2 servers of the pool UP"),
    (["--max-fail", "0"], "error: --max-fail: 0 must be from 1"),
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
    return {row.split()[0]: row.split()[2] for row in rows if row.strip() and not row.startswith(("fix", "warning"))}


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
