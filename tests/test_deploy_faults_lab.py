"""Issue 9 on the real lab: the deploy lock (held, stale, waited for, bad input), a reload while an instance is in
MAINT, a crash inside the soak, SIGINT or SIGTERM mid-rollout then a re-run that converges, HAProxy stopping on a
balancer mid-instance; under load where a deploy runs."""

import json
import signal
import subprocess
import time

import pytest

from conftest import INV, REPO, build_demo, end_process, inv
from fabfile.loadtest.facade import BackgroundLoad
from fabfile.shell import q
from fabfile.tasks import support
from fabfile.transports import connect
from test_deploy_lab import PoolWatcher, world  # noqa: F401  (shared module fixture)

pytestmark = pytest.mark.lab
FAST = ["--set", "deploy_soak_seconds=1"]


def under_load(world, action, lb=None, runtime=None):
    """``action()`` while 20 req/s go through ``lb`` (default: the first balancer) and ``runtime`` is watched:
    no failed request, and some api server UP in every sample."""
    load = BackgroundLoad(f"http://{lb or world['lb']}:80", "/api/v1/health", rate=20, timeout=2, max_seconds=120)
    with PoolWatcher(runtime or world["runtime"], "api_pool") as watcher:
        load.start()
        try:
            result = action()
        finally:
            load.stop()
    assert not [s for s in load.samples if s.failed], [s for s in load.samples if s.failed][:3]
    assert watcher.snapshots and not watcher.moments_with_nothing_up()
    return result


def all_up(world):
    return all(s.status == "UP" for s in world["runtime"].show_stat() if s.pool == "api_pool")


def test_second_deploy_exits_3_within_2s_naming_the_holder(world):
    a, b = build_demo("api", "lock-a"), build_demo("api", "lock-b")
    first = subprocess.Popen([*INV, "api.deploy", "--binary", str(a), "-m", "first", *FAST], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        second = inv("api.deploy", "--binary", str(b), *FAST, check=False)
        assert second.returncode == 3 and time.monotonic() - started < 3
        assert "held by" in second.stderr and "api.deploy" in second.stderr and "'first'" in second.stderr
        assert first.wait(timeout=90) == 0
    finally:
        if first.poll() is None:
            end_process(first)
    assert "free:" in inv("lock.status").stdout
    assert inv("lock.release", check=False).returncode == 2


def test_maint_survives_a_haproxy_reload(world):
    runtime = world["runtime"]
    runtime.set_state("api_pool", "backend-api-2", "maint")
    try:
        done = inv("haproxy.setup", "--set", "haproxy_timeout_client=31s")
        assert "changed" in done.stdout
        assert runtime.server("api_pool", "backend-api-2").status == "MAINT"
    finally:
        runtime.set_state("api_pool", "backend-api-2", "ready")
        inv("haproxy.setup")


def test_crash_inside_the_soak_rolls_back_under_load(world):
    crashing = build_demo("api", "crash", "--crash-after", "1")
    done = under_load(world, lambda: inv("api.deploy", "--binary", str(crashing), "--set", "deploy_soak_seconds=4",
                                         check=False))
    assert done.returncode == 1, done.stdout
    assert "crashed inside the 4s soak" in done.stdout and "rolled-back" in done.stdout
    time.sleep(1)
    assert all_up(world)


@pytest.mark.parametrize("sig, phase, code", [(signal.SIGINT, " restart ", 130), (signal.SIGTERM, " install ", 143)],
                         ids=["SIGINT-after-restart", "SIGTERM-after-install"])
def test_a_signal_mid_rollout_leaves_it_safe_and_a_rerun_converges(world, sig, phase, code):
    """Ctrl-C or a CI timeout's SIGTERM: the instance in flight is made safe, the lock released, 130/143;
    the same deploy again ends with every instance on the target, ready and UP."""
    target = build_demo("api", f"sig{int(sig)}-{int(time.time())}")

    def interrupted_then_rerun():
        run = subprocess.Popen([*INV, "api.deploy", "--binary", str(target), *FAST], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            seen = ""
            while phase not in seen and time.monotonic() < deadline and run.poll() is None:
                seen += run.stdout.readline()
            run.send_signal(sig)
            out, err = run.communicate(timeout=90)
        finally:
            if run.poll() is None:
                end_process(run)
        return run.returncode, seen + out, err, inv("lock.status").stdout, inv("api.deploy", "--binary", str(target), *FAST)

    code_seen, out, err, lock_after, again = under_load(world, interrupted_then_rerun)
    assert code_seen == code, out + err
    assert "-- interrupted" in out and "backend-api-1" in out
    assert lock_after.startswith("free"), lock_after
    assert again.returncode == 0
    assert all_up(world)
    status = inv("api.status").stdout
    assert "MAINT" not in status and "DRAIN" not in status and "fix:" not in status
    assert status.count(target.name.split("veza-api-", 1)[1]) == len(world["inventory"].group("backend_api_instances")), status


def test_haproxy_stopped_on_the_peer_mid_instance_rolls_it_back_and_a_rerun_converges(world, tmp_path):
    """HAProxy stops on the balancer that does not hold the VIP while backend-api-1 is out (load goes through
    the VIP): one line names it, the instance goes back through the VIP holder, report written, lock released;
    once that HAProxy is back the same deploy converges."""
    loaded = world["inventory"]
    topology = support.topology(loaded)
    pair = topology.pair
    if pair is None:
        pytest.skip("needs the balancer pair (lb_vip)")
    holder = next(h for h in loaded.group("haproxy") if pair.vip in connect(h).run("ip -4 -o addr").stdout)
    peer = connect(next(h for h in loaded.group("haproxy") if h is not holder))
    target = build_demo("api", f"peer-{int(time.time())}")
    report = tmp_path / "deploy.json"

    def stopped_mid_instance_then_rerun():
        run = subprocess.Popen([*INV, "api.deploy", "--binary", str(target), "--report", str(report), *FAST],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline, seen = time.monotonic() + 60, ""
            while " drain " not in seen and time.monotonic() < deadline and run.poll() is None:
                seen += run.stdout.readline()
            peer.run("systemctl stop haproxy")
            out, err = run.communicate(timeout=90)
        finally:
            peer.run("systemctl start haproxy")
            if run.poll() is None:
                end_process(run)
        return run.returncode, seen + out, err, inv("lock.status").stdout, inv("api.deploy", "--binary", str(target),
                                                                             *FAST, check=False)

    code, out, err, lock_after, again = under_load(world, stopped_mid_instance_then_rerun, lb=pair.vip,
                                                   runtime=topology.runtime_api(holder))
    assert code == 1 and "Traceback" not in out + err, out + err
    failures = [line for line in out.splitlines() if " FAILED " in line]
    assert len(failures) == 1 and f"{peer.name}: HAProxy runtime API" in failures[0], out
    outcomes = {o["name"]: o for o in json.loads(report.read_text())["instances"]}
    assert outcomes["backend-api-1"]["status"] == "rolled-back" and outcomes["backend-api-1"]["state"] == "ready (UP)"
    assert outcomes["backend-api-2"]["status"] == "untouched"
    assert lock_after.startswith("free"), lock_after
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(s.status == "UP" for s in topology.runtime().show_stat() if s.pool == "api_pool")
    assert inv("api.status").stdout.count(target.name.split("veza-api-", 1)[1]) == len(loaded.group("backend_api_instances"))


def test_bad_lock_input_is_one_line_exit_2_and_changes_nothing(world):
    """A negative --lock-wait, and a lock directory that cannot be made: refused before anything moves."""
    binary = build_demo("api", f"badlock-{int(time.time())}")
    before = inv("api.status").stdout
    negative = inv("api.deploy", "--binary", str(binary), "--lock-wait", "-3", check=False)
    assert negative.returncode == 2 and negative.stderr.count("\n") == 1 and "--lock-wait" in negative.stderr
    transport = connect(world["inventory"].hosts["haproxy"])
    transport.run("rm -rf /var/lock/veza-ops && touch /var/lock/veza-ops")  # a file where the lock directory goes
    try:
        blocked = inv("api.deploy", "--binary", str(binary), check=False)
    finally:
        transport.run("rm -f /var/lock/veza-ops")
    assert blocked.returncode == 2 and "not writable" in blocked.stderr and blocked.stderr.count("\n") == 1
    assert inv("api.status").stdout == before


def plant_lock(transport, who: str, heartbeat_age: str) -> None:
    """A lock another run left: its owner.json, last touched ``heartbeat_age`` ago (touch -d syntax)."""
    owner = json.dumps({"who": who, "pid": 999999, "run": "planted", "task": "api.deploy", "sha256": None,
                        "message": None, "started": "2026-01-01T00:00:00Z"})
    path = "/var/lock/veza-ops/deploy.lock/owner.json"
    transport.run(f"mkdir -p /var/lock/veza-ops/deploy.lock && printf %s {q(owner)} > {path}"
                  f" && touch -d {q(heartbeat_age)} {path}")


def test_stale_lock_is_shown_stale_and_taken_over_only_with_force(world):
    transport = connect(world["inventory"].hosts["haproxy"])
    binary = build_demo("api", f"stale-{int(time.time())}")
    plant_lock(transport, "ghost@elsewhere", "-10 minutes")
    try:
        refused = inv("api.deploy", "--binary", str(binary), check=False)
        assert refused.returncode == 3 and "STALE" in refused.stderr and "ghost@elsewhere" in refused.stderr
        assert "STALE" in inv("lock.status", check=False).stdout
        assert inv("lock.release", check=False).returncode == 3  # someone else's: not without --force
        assert inv("lock.release", "--force").returncode == 0
        assert inv("lock.status").stdout.startswith("free")
    finally:
        transport.run("rm -rf /var/lock/veza-ops/deploy.lock")


def test_lock_wait_takes_the_lock_once_the_holder_lets_go(world):
    transport = connect(world["inventory"].hosts["haproxy"])
    binary = build_demo("api", f"wait-{int(time.time())}")
    plant_lock(transport, "colleague@desk", "now")
    try:
        waiting = subprocess.Popen([*INV, "api.deploy", "--binary", str(binary), "--lock-wait", "30", *FAST], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None  # still waiting for the colleague
        transport.run("rm -rf /var/lock/veza-ops/deploy.lock")  # the colleague's run ends
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, out + err
    finally:
        transport.run("rm -rf /var/lock/veza-ops/deploy.lock")
        if waiting.poll() is None:
            end_process(waiting)
    assert all_up(world)
