"""Reloads on the real lab: test.reload loses no request of either client kind, and the server-state
file never brings back an old state: a MAINT lifted by the tool or
by hand stays lifted through a reload, a restart and a kill -9 of the master; a MAINT the tool set
survives all three. One balancer, one server, each state put back at the end."""

import pytest

from conftest import inv
from fabfile.haproxy_runtime import RuntimeAPI
from fabfile.inventory import load_inventory
from fabfile.polling import wait_until
from fabfile.transports import connect

pytestmark = pytest.mark.lab

POOL, SERVER = "api_pool", "backend-api-2"
MAINT = 1  # srv_admin_state bit of a forced maintenance (show servers state)


@pytest.fixture(scope="module")
def balancer(haproxy_ready):
    inventory = load_inventory(haproxy_ready)
    host = inventory.hosts.get("haproxy-2") or inventory.hosts["haproxy"]
    transport = connect(host)
    api = RuntimeAPI(transport)
    yield transport, api
    api.set_state(POOL, SERVER, "ready")
    inv("haproxy.setup")


def admin_state(api) -> int:
    """srv_admin_state of POOL/SERVER in the running process."""
    for line in api.send(f"show servers state {POOL}").splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == POOL and fields[3] == SERVER:
            return int(fields[6])
    raise AssertionError(f"{POOL}/{SERVER} not in show servers state")


def master(transport) -> str:
    return transport.run("systemctl show -p MainPID --value haproxy").stdout.strip()


def back(transport, api, before: str) -> int:
    """Wait for a new master that answers the runtime API; its view of the server."""
    wait_until(lambda: master(transport), done=lambda pid: pid not in ("", "0", before), timeout=30, interval=0.2,
               what="haproxy started again")
    return answering(api, 30)


def answering(api, timeout: float) -> int:
    """POOL/SERVER's admin state once the runtime API answers (a probe error means: not yet)."""
    return wait_until(lambda: admin_state(api), done=lambda state: True, timeout=timeout, interval=0.2,
                      what="haproxy answering").value


# Each helper clears systemd's start counter first: this module starts haproxy more often than the
# unit's start limit (5 in 10 s) allows, which would leave it failed instead of restarted.
def restart(transport, api) -> int:
    before = master(transport)
    transport.run("systemctl reset-failed haproxy; systemctl restart haproxy")
    return back(transport, api, before)


def kill_master(transport, api) -> int:
    before = master(transport)
    transport.run(f"systemctl reset-failed haproxy; kill -9 {before}")  # systemd's Restart=always brings it back
    return back(transport, api, before)


def reload(transport, api) -> int:
    transport.run("systemctl reload haproxy")
    return answering(api, 15)


def test_a_lifted_maint_stays_lifted_through_reload_and_restart(balancer):
    transport, api = balancer
    api.set_state(POOL, SERVER, "maint")  # the tool: saved at once
    assert reload(transport, api) & MAINT
    api.set_state(POOL, SERVER, "ready")
    assert restart(transport, api) & MAINT == 0
    # The reproduction: by hand on the runtime API (nothing saves), a reload in between.
    api.send(f"disable server {POOL}/{SERVER}")
    assert reload(transport, api) & MAINT  # the unit saved it before reloading
    api.send(f"enable server {POOL}/{SERVER}")
    assert restart(transport, api) & MAINT == 0  # saved again on the stop


def test_a_tool_set_maint_survives_reload_restart_and_kill(balancer):
    transport, api = balancer
    api.set_state(POOL, SERVER, "maint")
    assert reload(transport, api) & MAINT
    assert restart(transport, api) & MAINT
    assert kill_master(transport, api) & MAINT
    api.set_state(POOL, SERVER, "ready")
    assert admin_state(api) & MAINT == 0


def test_kill_9_of_the_master_brings_back_nothing_lifted(balancer):
    transport, api = balancer
    api.set_state(POOL, SERVER, "maint")
    api.set_state(POOL, SERVER, "ready")
    assert kill_master(transport, api) & MAINT == 0
    # Lifted by hand after the tool's MAINT was saved: the file is older than the lift, which the
    # journal shows, so the server starts from the config instead of the file.
    api.set_state(POOL, SERVER, "maint")
    transport.run("sleep 1.1")  # the lift falls in a later second than the save (journal --since is per second)
    api.send(f"enable server {POOL}/{SERVER}")
    assert kill_master(transport, api) & MAINT == 0


def test_reload_gate_loses_no_request_of_either_kind(deployed_lab, tmp_path):
    """inv test.reload, short: two reloads of each balancer under 60 req/s, half on kept-alive connections."""
    import json

    report = tmp_path / "reload.json"
    done = inv("test.reload", "--reloads", "2", "--interval", "1", "--report", str(report), "--plot",
               str(tmp_path / "reload.svg"), check=False, timeout=300)
    result = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    balancers = len(result["balancers"])
    assert [r["n"] for r in result["reloads"]] == [1] * balancers + [2] * balancers
    assert all(r["ok"] and r["new_worker"] for r in result["reloads"])
    kinds = result["requests"]["by_kind"]
    assert kinds["new"]["total"] > 0 and kinds["keepalive"]["total"] > 0
    assert kinds["new"]["failed"] == kinds["keepalive"]["failed"] == 0
    assert all(not w["still_running"] for r in result["reloads"] for w in r["old_workers"])
    assert (tmp_path / "reload.svg").read_text().startswith("<svg")
