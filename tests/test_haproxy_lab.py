"""haproxy.setup on the real lab: idempotent, no reload on a no-op, check/diff, bad overrides refused."""

import re

import pytest
import yaml

from conftest import REPO, inv
from fabfile.haproxy_runtime import RuntimeAPI
from fabfile.inventory import load_inventory
from fabfile.loadtest.facade import fetch
from fabfile.transports import connect

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def balancer(haproxy_ready):
    return connect(load_inventory(haproxy_ready).hosts["haproxy"])


def processes(balancer):
    """(master PID, worker PID, config sha256): what a reload or a rewrite would change."""
    master = balancer.run("systemctl show -p MainPID --value haproxy").stdout.strip()
    worker = balancer.run(f"pgrep -P {master} haproxy").stdout.split()
    digest = balancer.run("sha256sum /etc/haproxy/haproxy.cfg").stdout.split()[0]
    return master, worker, digest


def test_second_run_changes_nothing_and_does_not_reload(balancer):
    before = processes(balancer)
    again = inv("haproxy.setup")
    assert re.search(r"haproxy\s+: ok=\d+ changed=0 failed=0", again.stdout), again.stdout
    assert "handler: reload haproxy" not in again.stdout
    assert processes(balancer) == before


def test_check_diff_shows_a_changed_default_and_changes_nothing(balancer, tmp_path):
    inventory = yaml.safe_load((REPO / "hosts.yaml").read_text())
    inventory["all"]["children"]["haproxy"]["vars"] = {"haproxy_timeout_client": "45s"}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(inventory))
    before = processes(balancer)
    done = inv("haproxy.setup", "--inventory", str(path), "--check", "--diff")
    assert "-    timeout client 30s" in done.stdout and "+    timeout client 45s" in done.stdout
    assert re.search(r"haproxy\s+changed .*file /etc/haproxy/haproxy.cfg \(check\)", done.stdout)
    assert processes(balancer) == before


@pytest.mark.parametrize("override, problem", [
    ("haproxy_api_balance=nonsense", "haproxy_api_balance: 'nonsense' is not a balance algorithm"),
])
def test_invalid_override_is_refused_before_any_change(balancer, override, problem):
    before = processes(balancer)
    done = inv("haproxy.setup", "--set", override, check=False)
    assert done.returncode != 0
    assert problem in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert processes(balancer) == before


def test_haproxy_c_rejects_what_validation_let_through(balancer):
    """A value only HAProxy itself knows is wrong: the temporary file fails `haproxy -c`, the live one stays."""
    before = processes(balancer)
    done = inv("haproxy.setup", "--set", "haproxy_log_facility=nofacility", check=False)
    assert done.returncode == 1
    assert re.search(r"haproxy\s+failed .*file /etc/haproxy/haproxy.cfg", done.stdout)
    assert processes(balancer) == before
    assert balancer.run("ls /etc/haproxy").stdout.split().count("haproxy.cfg.veza-tmp") == 0


def test_runtime_api_sees_every_server_up(deployed_lab, balancer):
    stats = RuntimeAPI(balancer).show_stat()
    states = {(s.pool, s.server): s.status for s in stats}
    for pool, server in [("api_pool", "backend-api-1"), ("api_pool", "backend-api-2"),
                         ("stream_pool", "stream-server-1"), ("stream_pool", "stream-server-2")]:
        assert states[(pool, server)] == "UP", states


def test_a_track_always_lands_on_the_same_streamer(deployed_lab):
    lb = load_inventory(deployed_lab).hosts["haproxy"].address
    owners = {}
    for track in range(12):
        seen = set()
        for segment in range(4):
            reply = fetch(f"http://{lb}:80", f"/hls/track-{track}/segment-{segment}.ts")
            assert reply.status == 200, reply.body
            seen.add(re.search(r"instance=(\S+)", reply.body).group(1))
        assert len(seen) == 1, f"track-{track} served by {seen}"
        owners[track] = seen.pop()
    assert set(owners.values()) == {host.name for host in load_inventory(deployed_lab).group("stream_server_instances")}


def test_sticky_cookie_pins_api_requests(deployed_lab):
    lb = load_inventory(deployed_lab).hosts["haproxy"].address
    first = fetch(f"http://{lb}:80", "/api/v1/health")
    pinned = first.cookie("SERVERID")
    assert first.status == 200 and pinned == first.instance
    for _ in range(6):
        reply = fetch(f"http://{lb}:80", "/api/v1/health", {"Cookie": f"SERVERID={pinned}"})
        assert reply.status == 200 and reply.instance == pinned


def test_missing_tls_certificate_fails_before_any_change(balancer):
    before = processes(balancer)
    done = inv("haproxy.setup", "--set", "haproxy_tls_cert_path=/etc/haproxy/certs/missing.pem", check=False)
    assert done.returncode == 1
    assert "haproxy_tls_cert_path /etc/haproxy/certs/missing.pem does not exist on haproxy" in done.stdout
    assert re.search(r"haproxy\s+: ok=0 changed=0 failed=1 skipped=\d+", done.stdout), done.stdout
    assert processes(balancer) == before


def test_a_reload_that_starts_no_worker_restores_the_previous_config(balancer):
    """Port 22 passes `haproxy -c` but the new worker cannot bind it (sshd has it): restore + fail."""
    before_master, _, before_digest = processes(balancer)
    done = inv("haproxy.setup", "--set", "haproxy_http_port=22", check=False)
    assert done.returncode == 1
    assert "reload failed" in done.stdout and "previous haproxy.cfg restored" in done.stdout
    master, workers, digest = processes(balancer)
    assert (master, digest) == (before_master, before_digest)
    assert workers
    lb = load_inventory(REPO / "hosts.yaml").hosts["haproxy"].address
    assert fetch(f"http://{lb}:80", "/api/v1/health").status in (200, 503)  # still serving on :80 (503 only if no backend runs yet)
    # keepalived's frontend check took the refused port too (the keepalived role's step succeeded):
    # put the pair back on the inventory's port, or both nodes fault and the VIP is gone for later tests.
    inv("haproxy.setup")
