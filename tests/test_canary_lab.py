"""Issue 24 on the real lab: canary deploys judged by HAProxy's counters, under an independent load through
the VIP of both kinds (new connection per request, and keep-alive connections). A good canary is promoted
with 0 failed requests; a canary answering 20 % 500s and one 300 ms slower are aborted within
interval × checks + interval, every instance back on the old version, failures only from the canary;
a canary crashing 20 s after start is aborted; Ctrl-C mid-canary leaves the old version and the configured
weights; reloads mid-canary lose no weight; a stream canary moves tracks; a static pool is refused. Short
intervals (4 s) keep the module near three and a half minutes."""

import json
import signal
import subprocess
import time

import pytest

from conftest import INV, REPO, assert_one_error_line, build_demo, end_process, inv
from fabfile.balancers import BalancerSet
from fabfile.haproxy_runtime import RuntimeAPI
from fabfile.inventory import load_inventory
from fabfile.loadtest.keepalive import MixedLoad, kind_counts
from fabfile.services import BACKEND_API
from fabfile.tasks import support
from fabfile.transports import connect

pytestmark = pytest.mark.lab
INTERVAL, CHECKS = 4, 2
FAST = ["--set", "deploy_soak_seconds=1", "--canary-interval", str(INTERVAL), "--canary-checks", str(CHECKS),
        "--canary-min-requests", "10"]
PATH = "/api/v1/tracks/7"  # not the health path: the stand-in's --error-rate spares that one, as HAProxy's checks
RATE = 80


@pytest.fixture(scope="module")
def world(deployed_lab):
    inventory = load_inventory(deployed_lab)
    runtime = BalancerSet([RuntimeAPI(connect(host)) for host in inventory.group("haproxy")])
    baseline = build_demo("api", "can-base")
    inv("api.deploy", "--binary", str(baseline), "--set", "deploy_soak_seconds=0")
    yield {"inventory": inventory, "runtime": runtime, "lb": support.topology(inventory).client_address(), "base": baseline}
    inv("api.deploy", "--binary", str(build_demo("api", "v1")), "--set", "deploy_soak_seconds=0")


def live_sha256s(world) -> dict:
    out = {}
    for host in world["inventory"].group(BACKEND_API.group):
        done = connect(host).run(f"sha256sum /opt/veza/backend-api/veza-api | cut -d' ' -f1", warn=True)
        out[host.name] = done.stdout.strip()
    return out


def sha256_of(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def configured_weights(world) -> bool:
    return all(now == initial for _, weights in world["runtime"].weights("api_pool", ["backend-api-1", "backend-api-2"])
               for now, initial in weights.values())


def canary_under_load(world, binary, *extra, tmp_path):
    """The canary deploy while MixedLoad (half keep-alive on 8 connections) runs through the VIP."""
    report = tmp_path / "deploy.json"
    load = MixedLoad(f"http://{world['lb']}:80", PATH, rate=RATE, keepalive_share=0.5, connections=8, timeout=2,
                     max_seconds=150)
    load.start()
    try:
        done = inv("api.deploy", "--binary", str(binary), "--canary", *FAST, *extra, "--report", str(report),
                   check=False, timeout=240)
    finally:
        load.stop()
    return done, json.loads(report.read_text()), load.samples


@pytest.mark.parametrize("variant", [("--error-rate", "0.2"), ("--slow-ms", "300")], ids=["500s", "slow"])
def test_a_bad_canary_is_aborted_in_time_with_failures_only_from_it(world, tmp_path, variant):
    before = live_sha256s(world)
    bad = build_demo("api", f"can-bad-{variant[1]}", *variant)
    done, report, samples = canary_under_load(world, bad, "--canary-steps", "20,50", tmp_path=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    canary = report["canary"]
    assert canary["decision"] == "aborted", canary
    # The bound, plus what reading every balancer's counters and probing the canary cost per interval.
    assert canary["seconds_to_decision"] <= INTERVAL * CHECKS + INTERVAL + 3, canary
    assert live_sha256s(world) == before  # the old version on every instance
    assert configured_weights(world)
    failed = [s for s in samples if s.failed]
    if variant[0] == "--error-rate":
        assert failed and all(s.status == 500 and s.instance == "backend-api-1" for s in failed), failed[:3]
        assert len(failed) <= canary["exposed_share"] * len(samples) * 0.2 * 1.5 + 3
        assert any("5xx" in i_reason for i in canary["intervals"] for i_reason in i["reasons"])
    else:
        assert not failed, failed[:3]
        assert any("mean" in reason for i in canary["intervals"] for reason in i["reasons"])
    assert "canary ABORTED" in done.stdout and "canary interval 1 step 20%" in done.stdout


def test_a_canary_crashing_after_20s_is_aborted(world, tmp_path):
    before = live_sha256s(world)
    crashing = build_demo("api", "can-crash", "--crash-after", "20")
    done, report, samples = canary_under_load(world, crashing, "--canary-steps", "10,20,30,40,50,60", tmp_path=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert report["canary"]["decision"] == "aborted" and "main process changed" in report["canary"]["reason"]
    assert live_sha256s(world) == before and configured_weights(world)
    failed = [s for s in samples if s.failed]
    assert len(failed) <= max(3, report["canary"]["exposed_share"] * len(samples)), failed[:5]


def test_ctrl_c_mid_canary_rolls_it_back_and_restores_the_weights(world):
    """api.status shows the weights and the canary while it runs; SIGINT then leaves the old version."""
    before = live_sha256s(world)
    good = build_demo("api", "can-sigint")
    # No load: every interval is inconclusive and holds the first step (the limit raised so it never aborts
    # by itself), however long the status below takes on a busy host.
    process = subprocess.Popen([*INV, "api.deploy", "--binary", str(good), "--canary", *FAST, "--canary-steps",
                                "10,20", "--set", "deploy_canary_inconclusive_limit=100"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        for line in process.stdout:
            lines.append(line)
            if line.startswith("canary step 10%") or time.monotonic() > deadline:
                break
        deadline = time.monotonic() + 30
        for line in process.stdout:  # mid-analysis: the canary has been serving its share
            lines.append(line)
            if line.startswith("canary interval 1") or time.monotonic() > deadline:
                break
        during = inv("api.status").stdout  # what an operator sees while it runs
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=90)
        lines.append(out)
    finally:
        if process.poll() is None:
            end_process(process)
    text = "".join(lines)
    assert process.returncode == 130, text
    assert "canary in progress: backend-api-1 analysing at step 10" in during, during
    assert "backend-api-2=9 (configured 1)" in during, during
    assert "canary: interrupted" in text and "weights back to the configured ones" in text
    assert live_sha256s(world) == before and configured_weights(world)
    assert "free:" in inv("lock.status").stdout
    status = inv("api.status").stdout
    assert "canary in progress" not in status and "configured" not in status


def test_a_bad_stream_canary_moves_tracks_and_is_aborted(world, tmp_path):
    """stream_pool hashes tracks: the canary gets a share of the tracks (said in the output and the report);
    a streamer answering 30 % 500s is aborted, only its own tracks' requests failed, the old build everywhere."""
    streamers = world["inventory"].group("stream_server_instances")

    def shas():
        return {h.name: connect(h).run("sha256sum /opt/veza/stream-server/stream-server | cut -d' ' -f1").stdout.strip()
                for h in streamers}

    before = shas()
    bad = build_demo("stream", "can-stream-bad", "--error-rate", "0.3")
    loads = [MixedLoad(f"http://{world['lb']}:80", f"/hls/canary-{n}/seg-1.ts", rate=4, keepalive_share=0.5,
                       connections=1, timeout=2, max_seconds=120) for n in range(24)]
    for load in loads:
        load.start()
    report = tmp_path / "stream.json"
    try:
        done = inv("stream.deploy", "--binary", str(bad), "--canary", *FAST, "--canary-steps", "25,50", "--report",
                   str(report), check=False, timeout=240)
    finally:
        for load in loads:
            load.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    canary = json.loads(report.read_text())["canary"]
    assert canary["decision"] == "aborted" and canary["moves"] == "tracks"
    assert "a share of the tracks, not of the requests" in done.stdout and "25.0% of the tracks" in done.stdout
    assert shas() == before
    failed = [s for load in loads for s in load.samples if s.failed]
    assert failed and all(s.status == 500 and s.instance == "stream-server-1" for s in failed), failed[:3]


def test_a_good_canary_is_promoted_with_no_failed_request_even_through_reloads(world, tmp_path):
    """Both balancers reloaded (systemctl) mid-canary: the canary's weights are back within an interval (kept in
    the server-state file, or set again), the restarted counters make an inconclusive interval, and it is
    promoted: 0 failed requests of either kind, every instance on the new build, configured weights back, the plot
    drawn."""
    good = build_demo("api", "can-good")
    report = tmp_path / "deploy.json"
    load = MixedLoad(f"http://{world['lb']}:80", PATH, rate=RATE, keepalive_share=0.5, connections=8, timeout=2,
                     max_seconds=150)
    load.start()
    process = subprocess.Popen([*INV, "api.deploy", "--binary", str(good), "--canary", *FAST, "--canary-steps",
                                "20,30,40", "--report", str(report), "--plot", str(tmp_path / "canary.svg")],
                               cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 90
        for line in process.stdout:
            lines.append(line)
            if line.startswith("canary interval 1") or time.monotonic() > deadline:
                break
        time.sleep(INTERVAL / 2)  # mid-interval: the step's weights are in place
        for host in world["inventory"].group("haproxy"):
            connect(host).run("systemctl reload haproxy")
        # Kept through the reload (server-state file) or set again at the interval's end: either way the
        # canary's weights are back on every balancer within an interval.
        deadline, kept = time.monotonic() + INTERVAL + 3, False
        while not kept and time.monotonic() < deadline:
            kept = not configured_weights(world)
            time.sleep(0.3)
        out, _ = process.communicate(timeout=120)
        lines.append(out)
    finally:
        load.stop()
        if process.poll() is None:
            end_process(process)
    text = "".join(lines)
    assert process.returncode == 0, text
    assert kept and "counters went down" in text, text
    canary = json.loads(report.read_text())["canary"]
    assert canary["decision"] == "promoted" and canary["moves"] == "requests" and 0 < canary["exposed_share"] < 0.5
    verdicts = [i["verdict"] for i in canary["intervals"]]
    assert verdicts.count("pass") == 3 and "fail" not in verdicts, verdicts  # one pass per step
    assert configured_weights(world) and set(live_sha256s(world).values()) == {sha256_of(good)}
    counts = kind_counts(load.samples)
    assert counts["new"]["total"] > 100 and counts["keepalive"]["total"] > 100
    assert counts["new"]["failed"] == 0 and counts["keepalive"]["failed"] == 0, counts
    assert "canary PROMOTED" in text and "<svg" in (tmp_path / "canary.svg").read_text()


def test_a_static_pool_is_refused_in_one_line(world):
    done = inv("api.deploy", "--binary", str(world["base"]), "--canary", "--set", "haproxy_api_balance=static-rr",
               check=False)
    assert_one_error_line(done, 2, "static-rr", "--canary", "roundrobin")
