"""api/stream setup and rolling deploys on the real lab, under load, with a pool watcher."""

import json
import re
import threading

import pytest

from conftest import REPO, build_demo, inv
from fabfile.haproxy_runtime import RuntimeAPI
from fabfile.inventory import load_inventory
from fabfile.loadtest.keepalive import MixedLoad, kind_counts
from fabfile.transports import connect

pytestmark = pytest.mark.lab

SERVICES = {
    "api": {"pool": "api_pool", "group": "backend_api_instances", "unit": "veza-backend-api",
            "binary": "/opt/veza/backend-api/veza-api", "path": "/api/v1/health", "user": "veza-api",
            "env": "/etc/veza/backend-api.env"},
    "stream": {"pool": "stream_pool", "group": "stream_server_instances", "unit": "veza-stream-server",
               "binary": "/opt/veza/stream-server/stream-server", "path": "/hls/track-7/seg-1.ts",
               "user": "veza-stream", "env": "/etc/veza/stream-server.env"},
}


class PoolWatcher:
    """Polls the runtime API in the background (bounded) and records every pool snapshot."""

    def __init__(self, runtime, pool, max_polls=3000):
        self.runtime, self.pool, self.max_polls = runtime, pool, max_polls
        self.snapshots = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for _ in range(self.max_polls):
            if self._stop.wait(0.15):
                return
            try:
                self.snapshots.append({s.server: s.status for s in self.runtime.show_stat() if s.pool == self.pool})
            except Exception:  # a missed poll is not a finding; the next one comes 0.15 s later
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=20)

    def moments_with_nothing_up(self):
        return [snap for snap in self.snapshots if not any(status == "UP" for status in snap.values())]


@pytest.fixture(scope="module")
def world(deployed_lab):
    inventory = load_inventory(deployed_lab)
    return {
        "inventory": inventory,
        "lb": inventory.hosts["haproxy"].address,
        "runtime": RuntimeAPI(connect(inventory.hosts["haproxy"])),
    }


def instances(world, kind):
    return {h.name: connect(h) for h in world["inventory"].group(SERVICES[kind]["group"])}


def remote_state(transport, kind):
    """(sha256 of the live binary, MainPID of the unit)."""
    svc = SERVICES[kind]
    out = transport.run(f"sha256sum {svc['binary']} | cut -d' ' -f1; systemctl show -p MainPID --value {svc['unit']}")
    sha, pid = out.stdout.split()
    return sha, pid


NO_SOAK = ("--set", "deploy_soak_seconds=0")


def deploy_under_load(world, kind, binary, *, expect_ok=True):
    svc = SERVICES[kind]
    # Real clients keep connections open: half the load on 8 kept-alive connections, counted apart.
    load = MixedLoad(f"http://{world['lb']}:80", svc["path"], rate=40, keepalive_share=0.5, connections=8, timeout=2,
                     max_seconds=240)
    with PoolWatcher(world["runtime"], svc["pool"]) as watcher:
        load.start()
        try:
            done = inv(f"{kind}.deploy", "--binary", str(binary), check=expect_ok)
        finally:
            load.stop()
    return done, load.samples, watcher


@pytest.mark.parametrize("kind", ["api", "stream"])
def test_setup_twice_second_run_changes_nothing(world, kind):
    again = inv(f"{kind}.setup")
    for name in instances(world, kind):
        assert re.search(rf"{name}\s+: ok=\d+ changed=0 failed=0", again.stdout), again.stdout


@pytest.mark.parametrize("kind", ["api", "stream"])
def test_env_file_is_private_and_secrets_never_printed(world, kind):
    svc = SERVICES[kind]
    transport = next(iter(instances(world, kind).values()))
    assert transport.run(f"stat -c '%a %U %G' {svc['env']}").stdout.split() == ["640", "root", svc["user"]]
    secrets_file = REPO / world["inventory"].hosts["haproxy"].vars["secrets_file"]
    values = [v for v in secrets_file.read_text().split() if len(v) > 12]
    assert values
    transport.run(f"sed -i 's/^APP_ENV=.*/APP_ENV=drifted/' {svc['env']}")
    done = inv(f"{kind}.setup", "--diff")
    # A file holding secrets is diffed by key only: no value, old or new, secret or not.
    assert "APP_ENV: changed" in done.stdout and "drifted" not in done.stdout
    assert not any(value in done.stdout + done.stderr for value in values)


def test_unit_is_hardened(world):
    transport = next(iter(instances(world, "api").values()))
    out = transport.run("systemd-analyze security veza-backend-api.service --no-pager | tail -1").stdout
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
    assert score <= 2.0, out


@pytest.mark.parametrize("kind", ["api", "stream"])
def test_rolling_deploy_under_load_has_no_failed_request(world, kind):
    v2 = build_demo(kind, "v2")
    done, samples, watcher = deploy_under_load(world, kind, v2)
    failed = [s for s in samples if s.failed]
    assert len(samples) > 20 and not failed, failed[:5]
    kinds = kind_counts(samples)  # drain, restart, ready: neither client kind loses a request
    assert kinds["new"]["total"] > 10 and kinds["keepalive"]["total"] > 10, kinds
    assert watcher.snapshots and not watcher.moments_with_nothing_up()
    for name, transport in instances(world, kind).items():
        port = transport.run(f"grep ^LISTEN_PORT= {SERVICES[kind]['env']}").stdout.split("=")[1].strip()
        health = json.loads(transport.run(f"curl -s http://127.0.0.1:{port}/api/v1/health").stdout)
        assert health["version"] == "v2", (name, health)
    # The same binary again: reported ok, nothing restarted.
    before = {name: remote_state(t, kind) for name, t in instances(world, kind).items()}
    again = inv(f"{kind}.deploy", "--binary", str(v2))
    assert again.stdout.count("nothing restarted") == len(before)
    assert {name: remote_state(t, kind) for name, t in instances(world, kind).items()} == before


@pytest.mark.parametrize("kind", ["api", "stream"])
def test_broken_binary_rolls_back_the_first_instance_and_stops(world, kind):
    v3 = build_demo(kind, "v3")
    inv(f"{kind}.deploy", "--binary", str(v3), *NO_SOAK)  # the starting point; its soak is not under test
    targets = instances(world, kind)
    first, *others = list(targets)
    before_others = {name: remote_state(targets[name], kind) for name in others}
    live_first = remote_state(targets[first], kind)[0]
    broken = build_demo(kind, "v4", "--broken")
    done, samples, watcher = deploy_under_load(world, kind, broken, expect_ok=False)
    assert done.returncode != 0
    assert re.search(rf"{first}\s+rolled-back", done.stdout), done.stdout
    assert "(a crash loop)" in done.stdout, done.stdout  # known at systemd's first restart, not at a timeout
    assert remote_state(targets[first], kind)[0] == live_first
    assert {name: remote_state(targets[name], kind) for name in others} == before_others
    assert world["runtime"].server(SERVICES[kind]["pool"], first).is_up
    assert watcher.snapshots and not watcher.moments_with_nothing_up()
    assert not [s for s in samples if s.failed]


def test_rollback_returns_to_the_previous_binary(world):
    targets = instances(world, "api")
    v5 = build_demo("api", "v5")
    before = {name: remote_state(t, "api")[0] for name, t in targets.items()}
    inv("api.deploy", "--binary", str(v5), *NO_SOAK)
    inv("api.rollback", *NO_SOAK)
    assert {name: remote_state(t, "api")[0] for name, t in targets.items()} == before
    assert all(world["runtime"].server("api_pool", name).is_up for name in targets)
