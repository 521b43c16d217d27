"""The balancer pair without a lab: lb_vip checks, the rendered keepalived.conf, BalancerSet, the test's checks."""

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from fabfile import lb_pair
from fabfile.balancers import BalancerSet, BalancersFailed, merge
from fabfile.failover.vip_watch import ownership_checks
from fabfile.haproxy_runtime import RuntimeAPIError, ServerStat
from fabfile.inventory import load_inventory
from fabfile.values import InvalidValue


def inventory(tmp_path, balancers=2, vip="10.9.0.100", extra_vars=None, subnet="10.9.0.0/24"):
    hosts = {"haproxy": {"address": "10.9.0.10"}}
    for index in range(2, balancers + 1):
        hosts[f"haproxy-{index}"] = {"address": f"10.9.0.{9 + index}"}
    group = {"hosts": hosts}
    if vip is not None:
        group["vars"] = {"lb_vip": vip, **(extra_vars or {})}
    data = {"all": {"vars": {"connection": "local", "lab_subnet": subnet, "secrets_file": str(tmp_path / "s.yaml")},
                    "children": {"haproxy": group,
                                 "backend_api_instances": {"hosts": {"backend-api-1": {"address": "10.9.0.21"}}}}}}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "s.yaml").write_text("vrrp_password: abc12345\n")
    return path


def pair_of(path):
    loaded = load_inventory(str(path))
    return lb_pair.pair_settings("haproxy", loaded.group("haproxy"), list(loaded.hosts.values()))


def test_no_vip_is_no_pair_and_one_balancer_is_as_before(tmp_path):
    assert pair_of(inventory(tmp_path, balancers=1, vip=None)) is None
    assert pair_of(inventory(tmp_path, balancers=2, vip=None)) is None


def test_pair_priorities_and_unicast_peers_follow_inventory_order(tmp_path):
    pair = pair_of(inventory(tmp_path))
    assert pair.vip == "10.9.0.100" and pair.prefix == 24
    assert [(n.name, n.priority, n.peer) for n in pair.nodes] == [("haproxy", 150, "10.9.0.11"),
                                                                   ("haproxy-2", 100, "10.9.0.10")]
    assert pair.preempt is False and pair.version == 3 and pair.advert_interval == 0.3


@pytest.mark.parametrize("kwargs, words", [
    ({"vip": "10.9.1.100"}, "not a host address of lab_subnet"),
    ({"vip": "10.9.0.255"}, "not a host address"),
    ({"vip": "10.9.0.21"}, "is the address of host 'backend-api-1'"),
    ({"vip": "10.9.0.10"}, "is the address of host 'haproxy'"),
    ({"vip": "not-an-ip"}, "is not an IPv4 address"),
    ({"balancers": 3}, "has 3 balancers"),
    ({"balancers": 1}, "needs two balancers"),
    ({"extra_vars": {"lb_vrrp_version": 2, "lb_vrrp_advert_interval": 0.5}}, "needs lb_vrrp_version 3"),
    ({"extra_vars": {"lb_vrrp_interface": "eth0\nvrrp_script x"}}, "lb_vrrp_interface"),
    ({"extra_vars": {"lb_vrrp_preempt": "yes"}}, "lb_vrrp_preempt"),
])
def test_bad_pairs_are_refused_in_one_line(tmp_path, kwargs, words):
    with pytest.raises(InvalidValue) as refused:
        pair_of(inventory(tmp_path, **kwargs))
    assert words in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("secrets, words", [({}, "is missing"), ({"vrrp_password": "123456789"}, "1-8 characters"),
                                            ({"vrrp_password": "a b"}, "1-8 characters")])
def test_vrrp_password_is_required_and_short(tmp_path, secrets, words):
    with pytest.raises(InvalidValue, match=words):
        lb_pair.vrrp_password(pair_of(inventory(tmp_path)), secrets)


def render(tmp_path, **extra):
    from fabfile.templating import render as render_template

    pair = pair_of(inventory(tmp_path, extra_vars=extra))
    return render_template("keepalived/keepalived.conf.j2", {
        "pair": pair, "node": pair.nodes[1], "password": "abc12345", "http_port": 80,
        "monitor_uri": "/lb-health", "state_file": "/run/veza-haproxy-down",
        "notify_script": "/usr/local/lib/veza-ops/keepalived-notify"})


def test_rendered_config_is_unicast_v3_nopreempt_and_tracks_haproxy(tmp_path):
    text = render(tmp_path)
    assert "vrrp_version 3" in text and "enable_script_security" in text and "script_user keepalived_script" in text
    assert "unicast_src_ip 10.9.0.11" in text and "        10.9.0.10\n" in text and "check_unicast_src" in text
    assert "nopreempt" in text and "preempt_delay" not in text and "priority 100" in text
    assert "10.9.0.100/24 dev eth0" in text and "track_file haproxy_unit" in text
    assert "auth_pass" not in text  # RFC 5798 has no authentication; keepalived ignores it with v3
    assert "vrrp_track_process haproxy" not in text
    # Every VRRP state change goes to the script feeding the monitor's VIP-holder metric.
    assert '    notify "/usr/local/lib/veza-ops/keepalived-notify" root\n}' in text


def test_v2_carries_the_password_and_preemption_moves_back_after_a_delay(tmp_path):
    text = render(tmp_path, lb_vrrp_version=2, lb_vrrp_advert_interval=1, lb_vrrp_preempt=True, lb_track_process=True)
    assert "auth_pass abc12345" in text and "vrrp_version 2" in text
    assert "preempt_delay 10" in text and "nopreempt" not in text
    assert "vrrp_track_process haproxy" in text and "delay 0.5" in text


def test_bad_pair_input_is_one_error_line_exit_2(tmp_path):
    path = inventory(tmp_path, vip="10.9.1.5")
    for task in ("keepalived.setup", "haproxy.setup", "lb.status", "test.lb-failover"):
        done = subprocess.run([sys.executable, "-m", "invoke", task, "--inventory", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (task, done.stdout, done.stderr)
        assert done.stderr.startswith("error: lb_vip 10.9.1.5") and done.stderr.count("\n") == 1, done.stderr


def test_missing_vrrp_password_is_exit_2_before_any_change(tmp_path):
    path = inventory(tmp_path)
    (tmp_path / "s.yaml").write_text("jwt_secret: x\n")
    done = subprocess.run([sys.executable, "-m", "invoke", "keepalived.setup", "--inventory", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "vrrp_password" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def stat(server, status, sessions=0, pool="api_pool"):
    return ServerStat(pool=pool, server=server, status=status, weight=1, current_sessions=sessions, last_check="L7OK")


def test_merge_is_worst_of_with_summed_sessions():
    a = [stat("b1", "UP", 2), stat("b2", "UP", 1)]
    b = [stat("b1", "DRAIN", 3), stat("b2", "UP 1/3", 0)]
    merged = {s.server: s for s in merge([a, b])}
    assert (merged["b1"].status, merged["b1"].current_sessions) == ("DRAIN", 5)
    assert merged["b2"].status == "UP 1/3" and not merged["b2"].is_up
    assert merge([[stat("b1", "MAINT")], [stat("b1", "DOWN")]])[0].status == "MAINT"


class FakeRuntime:
    def __init__(self, name, rows):
        self.name, self.address, self.rows, self.calls = name, "/run/haproxy/admin.sock", rows, []

    def show_stat(self, include_aggregates=False):
        return self.rows

    def server(self, pool, name):
        return next(r for r in self.rows if (r.pool, r.server) == (pool, name))

    def set_state(self, pool, server, state, health=None):
        self.calls.append(("state", server, state, health))


def test_balancer_set_applies_to_each_and_waits_for_up_on_each():
    one, two = FakeRuntime("lb1", [stat("b1", "UP")]), FakeRuntime("lb2", [stat("b1", "DOWN 1/2")])
    both = BalancerSet([one, two])
    both.set_state("api_pool", "b1", "ready", health="up")
    assert one.calls == two.calls == [("state", "b1", "ready", "up")]
    assert not both.server("api_pool", "b1").is_up
    two.rows = [stat("b1", "UP")]
    assert both.server("api_pool", "b1").is_up


class StoppedRuntime(FakeRuntime):
    """A balancer whose HAProxy is stopped: its admin socket refuses everything."""

    def _refuse(self, *args, **kwargs):
        raise RuntimeAPIError(f"{self.name}: HAProxy runtime API at {self.address} does not answer (Connection refused)")

    show_stat = server = set_state = _refuse


def test_a_stopped_balancer_never_keeps_the_state_from_its_peer():
    stopped, holder = StoppedRuntime("lb1", []), FakeRuntime("lb2", [stat("b1", "MAINT")])
    both = BalancerSet([stopped, holder])
    with pytest.raises(BalancersFailed) as failed:
        both.set_state("api_pool", "b1", "ready")
    assert holder.calls == [("state", "b1", "ready", None)]  # the VIP holder got it although lb1 came first
    assert failed.value.failed == ["lb1"] and failed.value.answered == ["lb2"]
    assert str(failed.value).count("\n") == 0 and "lb1" in str(failed.value)
    answering = both.answering()
    assert [r.name for r in answering.runtimes] == ["lb2"] and answering.server("api_pool", "b1").status == "MAINT"
    with pytest.raises(RuntimeAPIError):
        BalancerSet([stopped, StoppedRuntime("lb2", [])]).answering()


def test_single_balancer_set_is_the_runtime_itself():
    one = FakeRuntime("lb1", [stat("b1", "UP 1/3")])
    assert BalancerSet([one]).show_stat() is one.rows


def test_node_state_parse():
    out = ("--addr\n2: eth0    inet 10.9.0.11/24 brd 10.9.0.255 scope global eth0\n"
           "2: eth0    inet 10.9.0.100/24 scope global secondary eth0\n--json\n"
           '[{"data": {"state": 2, "base_priority": 100, "effective_priority": 100}}]\n\n--units\nactive\nactive\n')
    state = lb_pair.parse_node_state(out, "10.9.0.100")
    assert state == {"holds_vip": True, "vrrp_state": "MASTER", "priority": 100, "effective_priority": 100,
                     "keepalived": "active", "haproxy": "active"}
    assert not lb_pair.parse_node_state(out, "10.9.0.1")["holds_vip"]


def test_ownership_counts_two_holders_gaps_after_move_and_moves_after_return():
    samples = {"a": [(0.0, True), (0.1, True), (0.2, True), (0.3, False), (0.4, False), (1.0, False), (1.1, True),
                     (1.2, True)],
               "b": [(0.05, False), (0.15, True), (0.25, True), (0.35, True), (0.45, False), (0.55, False),
                     (1.05, False), (1.15, False)]}
    checks = ownership_checks(samples, moved_at=0.3, returned_at=0.9)
    assert checks["two_holder_samples"] == 2  # b at 0.15 (a True around it), a at 0.2 (b True around it)
    assert checks["no_holder_samples_after_move"] == 3  # b at 0.45, 0.55 (a False around), a at 1.0
    assert [c["to"] for c in checks["moves_after_return"]] == ["a"]


def test_a_handover_between_two_samples_is_neither_two_holders_nor_none():
    # The incus run with preemption on: a takes the VIP at 23.49, b's samples show it until 23.443, not at 23.554.
    samples = {"a": [(23.373, False), (23.49, True), (23.596, True)],
               "b": [(23.332, True), (23.443, True), (23.554, False), (23.677, False)]}
    checks = ownership_checks(samples, moved_at=1.0, returned_at=2.0)
    assert checks["two_holder_samples"] == 0 and checks["no_holder_samples_after_move"] == 0
    assert checks["in_transition_samples"] == 4 and [c["to"] for c in checks["moves_after_return"]] == ["a"]


def test_sub_second_adverts_and_fast_gratuitous_arps_by_default(tmp_path):
    text = render(tmp_path)
    assert "advert_int 0.3" in text and "vrrp_version 3" in text
    assert "vrrp_garp_master_repeat 3" in text and "vrrp_garp_master_delay 1" in text
    assert "vrrp_garp_master_refresh 30" in text
