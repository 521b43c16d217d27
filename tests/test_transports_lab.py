"""The incus and ssh transports for real, against the lab's containers: the local daemon's API, the CLI,
a remote's API over HTTPS (an instance on the lab's second Incus host) and ssh."""

import textwrap
import threading
import time

import pytest

from fabfile import incus, incus_remote, process, transports
from fabfile.inventory import Host, load_inventory
from fabfile.shell import q
from fabfile.transports import IncusTransport, SshTransport, TransportError

from conftest import REPO, inv

pytestmark = pytest.mark.lab

NASTY = ["plain", "with space", "it's", 'dq"uote', "$HOME", "a;b", "new\nline", "`id`", "ünï"]
SSH_DIR = REPO / ".lab" / "ssh"


@pytest.fixture(scope="module")
def target(lab):
    return load_inventory(lab).hosts["stream-server-2"]


@pytest.fixture(scope="module")
def remote_target(lab):
    """An instance on the second Incus host (an incus remote), reached through that remote's API."""
    hosts = [h for h in load_inventory(lab).hosts.values()
             if h.connection == "incus" and h.vars.get("incus_remote", "local") != "local"]
    if not hosts:
        pytest.skip("the inventory places no instance on a remote Incus host")
    return hosts[0]


def ssh_host(target, **extra):
    values = {"connection": "ssh", "address": target.address, "ssh_user": "root",
              "ssh_key_file": str(SSH_DIR / "id_ed25519"), "ssh_known_hosts": str(SSH_DIR / "known_hosts"), **extra}
    return Host(name=target.name, inventory_vars=values, groups=["all"])


def incus_cli(host):
    """An incus transport that goes the CLI's way, as it does for a remote's instances."""
    transport = IncusTransport(host)
    transport.api = None
    return transport


MAKERS = {"incus": IncusTransport, "incus-cli": incus_cli, "ssh": lambda target: SshTransport(ssh_host(target)),
          "incus-remote": IncusTransport, "incus-remote-cli": incus_cli}


@pytest.fixture
def pick(request):
    """The lab host a transport kind is tried on: the remote kinds on the second Incus host."""
    return lambda make: request.getfixturevalue("remote_target" if make.startswith("incus-remote") else "target")


@pytest.mark.parametrize("make", ["incus", "incus-cli", "ssh", "incus-remote"])
def test_run_and_put_survive_nasty_values(pick, make, tmp_path):
    transport = MAKERS[make](pick(make))
    try:
        for value in NASTY:
            assert transport.run(f"printf '%s' {q(value)}").stdout == value
        remote = f"/tmp/veza transport test {make} 'x'"
        transport.put("payload $x\n".encode(), remote, mode="0640")
        assert transport.run(f"cat {q(remote)}").stdout == "payload $x\n"
        assert transport.run(f"stat -c '%a %U' {q(remote)}").stdout.strip() == "640 root"
        assert transport.run("exit 7", warn=True).exited == 7
        done = transport.run("cat; echo ' err' >&2; exit 3", warn=True, stdin=b"in\x00put")
        assert (done.stdout, done.stderr) == ("in\x00put", " err\n")
        transport.run(f"rm -f {q(remote)}")
    finally:
        transport.close()


@pytest.mark.parametrize("make", ["incus", "incus-cli", "incus-remote"])
def test_a_timeout_ends_the_command_inside_the_instance_too(pick, make):
    transport = MAKERS[make](pick(make))
    started = time.monotonic()
    done = transport.run("sleep 61.5", warn=True, timeout=1)
    assert done.exited == 124 and "timed out after 1" in done.stderr
    assert time.monotonic() - started < 1 + incus.KILL_AFTER + 3
    assert transport.run("pgrep -f '^sleep 61[.]5$' || echo gone").stdout.strip() == "gone"


@pytest.mark.parametrize("make", ["incus", "incus-cli", "incus-remote"])
def test_ctrl_c_during_a_command_is_taken_at_once(pick, make):
    import signal
    import threading

    transport = MAKERS[make](pick(make))
    threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        transport.run("sleep 20.25")
    assert time.monotonic() - started < 3
    if make == "incus-remote":  # the recorded exec outlives its client unless ended: it was
        assert transport.run("pgrep -f '^sleep 20[.]25$' || echo gone").stdout.strip() == "gone"


def test_the_local_daemon_is_reached_without_an_incus_process(target, monkeypatch):
    def no_process(argv, **kwargs):
        raise AssertionError(f"a process was started: {argv[:3]}")

    monkeypatch.setattr(transports, "run_argv", no_process)
    monkeypatch.setattr(process, "run_argv", no_process)
    transport = IncusTransport(target)
    transport.put(b"x\n", "/tmp/veza-api-put", mode="0600")
    assert transport.run("cat /tmp/veza-api-put && rm /tmp/veza-api-put").stdout == "x\n"


@pytest.mark.parametrize("make", ["incus", "incus-cli", "incus-remote"])
def test_a_put_that_cannot_land_is_a_transport_error(pick, make):
    with pytest.raises(TransportError, match="incus file push to /veza-no-such-dir/f failed"):
        MAKERS[make](pick(make)).put(b"x\n", "/veza-no-such-dir/f", mode="0600")


@pytest.mark.parametrize("make", ["incus", "incus-cli", "incus-remote", "incus-remote-cli"])
def test_a_missing_instance_is_a_transport_error(pick, make):
    remote = pick(make).vars.get("incus_remote", "local")
    ghost = Host(name="ghost", inventory_vars={"connection": "incus", "incus_name": "veza-no-such-instance",
                                               "incus_remote": remote}, groups=["all"])
    with pytest.raises(TransportError, match="ghost: incus exec failed: .*not found"):
        MAKERS[make](ghost).run("true")


@pytest.mark.parametrize("timeout", [None, 30])
def test_a_remote_command_longer_than_one_wait_on_the_daemon_is_waited_for(remote_target, monkeypatch, timeout):
    monkeypatch.setattr(incus_remote, "WAIT_STEP", 1)  # the daemon's wait runs out twice or more
    done = IncusTransport(remote_target).run("sleep 2.5; echo done; exit 6", warn=True, timeout=timeout)
    assert (done.exited, done.stdout, done.stderr) == (6, "done\n", "")


def test_a_remote_is_reached_through_its_api_without_an_incus_process(remote_target, monkeypatch):
    def no_process(argv, **kwargs):
        raise AssertionError(f"a process was started: {argv[:3]}")

    transport = IncusTransport(remote_target)
    transport.run("true")  # the route to the remote checked (ip route get), once per run
    monkeypatch.setattr(transports, "run_argv", no_process)
    monkeypatch.setattr(process, "run_argv", no_process)
    monkeypatch.setattr(incus_remote, "run_argv", no_process)
    transport.put(b"x\n", "/tmp/veza-api-put", mode="0600")
    assert transport.run("cat /tmp/veza-api-put && rm /tmp/veza-api-put").stdout == "x\n"
    assert transport.run("hostname").stdout.strip() == remote_target.vars.get("incus_name", remote_target.name)
    transport.api.flush()  # the recorded output files are deleted once read, none left on the remote
    listed = transport.api._call("GET", f"/1.0/instances/{remote_target.vars.get('incus_name', remote_target.name)}/logs/exec-output")
    assert listed["metadata"] == []


def unused_lab_address(inventory) -> str:
    import ipaddress

    hosts = load_inventory(inventory).hosts
    used = {h.vars.get("address") for h in hosts.values()} | {h.vars.get("lb_vip") for h in hosts.values()}
    subnet = ipaddress.ip_network(hosts["haproxy"].vars["lab_subnet"])
    return next(str(a) for a in reversed(list(subnet.hosts())) if str(a) not in used)


def test_a_remote_that_does_not_answer_is_one_clear_line_within_seconds(remote_target, lab):
    # An unused address on the lab bridge: nothing answers its ARP, the kernel gives up within seconds.
    real = incus_remote.endpoint(remote_target.vars["incus_remote"])
    api = incus_remote.RemoteAPI(incus.RemoteEndpoint(real.name, unused_lab_address(lab), 8443, real.server_cert,
                                                      real.client_cert, real.client_key))
    started = time.monotonic()
    with pytest.raises(incus.IncusError) as caught:
        api.exec(remote_target.vars.get("incus_name", remote_target.name), "true")
    assert time.monotonic() - started < incus_remote.CONNECT_TIMEOUT + 1
    message = str(caught.value)
    assert "\n" not in message and f"incus remote {real.name} ({unused_lab_address(lab)}:8443) unreachable: " in message


@pytest.fixture
def off_bridge_api(remote_target, monkeypatch):
    """The lab's remote with its address moved off the lab bridges (TEST-NET-1); opening any connection fails
    the test."""
    import http.client

    def no_connection(self):
        raise AssertionError(f"a connection to {self.host} was opened")

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", no_connection)
    real = incus_remote.endpoint(remote_target.vars["incus_remote"])
    return incus_remote.RemoteAPI(incus.RemoteEndpoint(real.name, "192.0.2.10", 8443, real.server_cert,
                                                       real.client_cert, real.client_key))


def test_a_remote_address_off_the_lab_bridges_is_refused_before_any_packet(remote_target, off_bridge_api):
    api = off_bridge_api
    with pytest.raises(incus.IncusError, match="192.0.2.10 is routed through '.*', not a lab bridge; refusing"):
        api.exec(remote_target.vars.get("incus_name", remote_target.name), "true")


def test_a_warmed_remote_runs_its_first_command_on_the_connection_opened_ahead(remote_target, monkeypatch):
    import http.client

    api = incus_remote.RemoteAPI(incus_remote.endpoint(remote_target.vars["incus_remote"]))
    api.warm()  # returns at once; the route check and the TLS handshake happen in a thread of its own
    deadline = time.monotonic() + 10
    while not api._idle and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(api._idle) == 1

    opened, connect = [], http.client.HTTPSConnection.connect

    def counted(self):
        opened.append(threading.current_thread().name)
        connect(self)

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", counted)
    name = remote_target.vars.get("incus_name", remote_target.name)
    assert api.exec(name, "echo warm").stdout == "warm\n"
    api.flush()  # the sweeper deletes the output files on a connection of its own
    api.close()
    assert threading.current_thread().name not in opened  # the command itself opened none


def test_warming_a_remote_off_the_lab_bridges_sends_nothing_and_its_command_says_why(remote_target, off_bridge_api):
    api = off_bridge_api
    api.warm()
    time.sleep(0.5)  # the warming thread met the refusal and kept it to itself
    assert not api._idle
    with pytest.raises(incus.IncusError, match="192.0.2.10 is routed through '.*', not a lab bridge; refusing"):
        api.exec(remote_target.vars.get("incus_name", remote_target.name), "true")


def test_ssh_rejects_an_unknown_host_key_by_default(target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SshTransport(ssh_host(target, ssh_known_hosts=str(empty)))
    with pytest.raises(TransportError, match="host key .* is not known"):
        transport.run("true")


def test_ssh_accept_new_is_an_explicit_opt_in(target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SshTransport(ssh_host(target, ssh_known_hosts=str(empty), ssh_host_key_policy="accept-new"))
    assert transport.run("hostname").stdout.strip() == target.vars.get("incus_name", target.name)  # the container's own name
    transport.close()


def test_a_play_over_ssh_with_check_mode(target, tmp_path):
    inventory = tmp_path / "ssh-hosts.yaml"
    inventory.write_text(textwrap.dedent(f"""
        all:
          vars:
            ansible_connection: ssh
            ansible_user: root
            ssh_key_file: {SSH_DIR / 'id_ed25519'}
            ssh_known_hosts: {SSH_DIR / 'known_hosts'}
          children:
            edge:
              hosts:
                {target.name}:
                  ansible_host: {target.address}
    """))
    first = inv("common.setup", "--inventory", str(inventory), "--report", str(tmp_path / "r.json"))
    assert f"{target.name:<16} : ok=" in first.stdout and "failed=0" in first.stdout
    again = inv("common.setup", "--inventory", str(inventory), "--check")
    assert "changed=0 failed=0" in again.stdout


BECOME_USERS = {"veza-deploy": "NOPASSWD: ALL", "veza-askpass": "ALL"}


@pytest.fixture(scope="module")
def sudo_users(target):
    """Two login users on the target with the lab's key: one with passwordless sudo, one whose sudo
    asks for a password (it has none, so it can never escalate)."""
    root = IncusTransport(target)
    root.run("command -v sudo >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo >/dev/null",
             timeout=300)
    for user, rule in BECOME_USERS.items():
        root.run(f"id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}; "
                 f"install -d -m 700 -o {user} -g {user} /home/{user}/.ssh && "
                 f"install -m 600 -o {user} -g {user} /root/.ssh/authorized_keys /home/{user}/.ssh/authorized_keys && "
                 f"echo {q(f'{user} ALL=(ALL) {rule}')} > /etc/sudoers.d/{user} && chmod 440 /etc/sudoers.d/{user}")
    yield
    for user in BECOME_USERS:
        root.run(f"rm -f /etc/sudoers.d/{user}; userdel -r {user} 2>/dev/null || true")


def test_ssh_become_runs_and_puts_as_root_through_sudo(target, sudo_users):
    plain = SshTransport(ssh_host(target, ssh_user="veza-deploy"))
    becoming = SshTransport(ssh_host(target, ssh_user="veza-deploy", become=True))
    try:
        assert plain.run("id -un").stdout.strip() == "veza-deploy"
        assert becoming.run("id -un").stdout.strip() == "root"
        for value in NASTY:
            assert becoming.run(f"printf '%s' {q(value)}").stdout == value
        assert becoming.run("cat", stdin=b"through sudo\n").stdout == "through sudo\n"
        remote = "/etc/veza become test 'x'"
        becoming.put("secret $x\n".encode(), remote, mode="0640")
        assert becoming.run(f"cat {q(remote)}").stdout == "secret $x\n"
        assert becoming.run(f"stat -c '%a %U' {q(remote)}").stdout.strip() == "640 root"
        assert plain.run("ls -A /tmp | grep -c veza-put || true").stdout.strip() == "0"  # staging file removed
        assert becoming.run("exit 5", warn=True).exited == 5
        becoming.run(f"rm -f {q(remote)}")
    finally:
        plain.close()
        becoming.close()


def test_ssh_become_without_nopasswd_is_one_clear_error(target, sudo_users):
    transport = SshTransport(ssh_host(target, ssh_user="veza-askpass", become=True))
    try:
        with pytest.raises(TransportError, match="sudo asks veza-askpass for a password; become passwords are not "
                                                 "supported: allow NOPASSWD"):
            transport.run("true")
    finally:
        transport.close()


def test_an_ansible_inventory_with_become_runs_a_play(target, sudo_users, tmp_path):
    inventory = tmp_path / "become-hosts.yaml"
    inventory.write_text(textwrap.dedent(f"""
        all:
          vars:
            ansible_connection: ssh
            ansible_user: veza-deploy
            ansible_become: yes
            ansible_become_method: sudo
            ssh_key_file: {SSH_DIR / 'id_ed25519'}
            ssh_known_hosts: {SSH_DIR / 'known_hosts'}
          hosts:
            {target.name}:
              ansible_host: {target.address}
    """))
    done = inv("common.setup", "--inventory", str(inventory), "--check")
    assert "changed=0 failed=0" in done.stdout, done.stdout + done.stderr


def test_a_remote_with_another_certificate_than_the_pinned_one_is_refused(remote_target, tmp_path):
    import subprocess

    other = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-days", "1", "-subj", "/CN=other"],
                   check=True, capture_output=True, timeout=30)
    real = incus_remote.endpoint(remote_target.vars["incus_remote"])
    api = incus_remote.RemoteAPI(incus.RemoteEndpoint(real.name, real.host, real.port, str(other),
                                                      real.client_cert, real.client_key))
    with pytest.raises(incus.IncusError, match="presents another certificate than the one pinned"):
        api.exec(remote_target.vars.get("incus_name", remote_target.name), "true")
