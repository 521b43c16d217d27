"""Issue 10 (security review) on the real lab: what a user or an attacker on the balancer would check.

Runs against the worktree's own lab (hosts.yaml). Every test leaves the lab as
it found it (secrets, configs, services restored).
"""

from __future__ import annotations

import signal
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from conftest import INV, REPO, assert_one_error_line, inv

from fabfile.inventory import load_inventory
from fabfile.templating import env_value
from fabfile.transports import IncusTransport, SshTransport

pytestmark = pytest.mark.lab

SSH_KEY = REPO / ".lab" / "ssh" / "id_ed25519"
LAB_KNOWN_HOSTS = REPO / ".lab" / "ssh" / "known_hosts"


def lab_hosts():
    return load_inventory(str(REPO / "hosts.yaml"))


def address(name: str) -> str:
    """A lab host's address from the inventory (whichever lab this checkout builds)."""
    return lab_hosts().select("all", name)[0].vars["address"]


def container(name: str) -> str:
    return lab_hosts().select("all", name)[0].vars.get("incus_name", name)


def on(name: str, command: str, check=True, user=None) -> subprocess.CompletedProcess:
    argv = ["incus", "exec", "--", container(name)]
    if user:
        argv += ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    done = subprocess.run([*argv, "sh", "-c", command], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{name}: {command}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return done


def sha(name: str, *paths) -> str:
    # Seen under heavy load: an exec that succeeded with empty output. Ask again (bounded).
    for _ in range(3):
        digest = on(name, "sha256sum " + " ".join(paths)).stdout
        if digest:
            return digest
    raise AssertionError(f"{name}: sha256sum {' '.join(paths)} printed nothing three times")


def inv_raw(*args, timeout=600):
    return inv(*args, check=False, timeout=timeout)


def variant_inventory(tmp_path, all_vars=None, host_vars=None) -> Path:
    """The lab's hosts.yaml with extra ``all`` vars and per-host vars merged in."""
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    data["all"]["vars"].update(all_vars or {})
    data["all"]["vars"]["secrets_file"] = str(REPO / data["all"]["vars"]["secrets_file"])
    for group in data["all"]["children"].values():
        for name, values in group.get("hosts", {}).items():
            values.update((host_vars or {}).get(name, {}))
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def api_pid(name="backend-api-1") -> str:
    return on(name, "systemctl show -p MainPID --value veza-backend-api").stdout.strip()


def api_environ(name="backend-api-1") -> dict:
    raw = subprocess.run(["incus", "exec", "--", container(name), "sh", "-c", f"cat /proc/{api_pid(name)}/environ"],
                         capture_output=True, timeout=60, check=True).stdout
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


# --- 1. Runtime API split ------------------------------------------------------------------------

def test_item1_nobody_gets_read_only_tcp_and_no_admin_socket(deployed_lab):
    tcp = "socat -t 2 stdio TCP4:127.0.0.1:9100"
    shown = on("haproxy", f"echo 'show stat' | {tcp}", user="nobody")
    assert shown.stdout.startswith("# pxname,svname") and "api_pool,backend-api-1" in shown.stdout
    for command in ("set server api_pool/backend-api-1 state maint",
                    "set server api_pool/backend-api-1 addr 10.9.9.9 port 80",
                    "disable server api_pool/backend-api-1"):
        refused = on("haproxy", f"echo '{command}' | {tcp}", user="nobody")
        assert "Permission denied" in refused.stdout or "Unknown command" in refused.stdout, refused.stdout
    admin = on("haproxy", "echo 'show info' | socat -t 2 stdio UNIX-CONNECT:/run/haproxy/admin.sock", check=False,
               user="nobody")
    assert admin.returncode != 0 and "Permission denied" in admin.stderr
    owner, mode = on("haproxy", "stat -c '%U %a' /run/haproxy/admin.sock").stdout.split()
    assert (owner, mode) == ("root", "600")
    # The server really stayed in rotation and at its address (root, through the admin socket).
    admin_stat = "echo 'show stat' | socat -t 2 stdio UNIX-CONNECT:/run/haproxy/admin.sock"
    row = next(line for line in on("haproxy", admin_stat).stdout.splitlines()
               if line.startswith("api_pool,backend-api-1,"))
    assert ",UP," in row and f"{address('backend-api-1')}:8080" in row


def test_item1_status_uses_the_admin_socket_the_template_renders(deployed_lab, tmp_path):
    done = inv_raw("haproxy.status")
    assert done.returncode == 0 and "api_pool" in done.stdout, done
    # A socket path the config does not render: the client follows the variable and says so in one line.
    other = inv_raw("haproxy.status", "--set", "haproxy_admin_socket=/run/haproxy/not-there.sock")
    assert_one_error_line(other, 1, "/run/haproxy/not-there.sock")


def test_item1_open_stats_socket_refused_on_the_lab_and_nothing_changed(deployed_lab):
    before = sha("haproxy", "/etc/haproxy/haproxy.cfg")
    done = inv_raw("haproxy.setup", "--set", "haproxy_stats_socket_address=0.0.0.0")
    assert_one_error_line(done, 2, "haproxy_stats_socket_address")
    assert sha("haproxy", "/etc/haproxy/haproxy.cfg") == before
    assert "0.0.0.0:9100" not in on("haproxy", "ss -ltn").stdout


# --- 2 and 3. Secrets rotated: never printed; the service gets the exact bytes -------------------

TRICKY = "it's \"quoted\" back\\slash $HOME ${X} `id` #not-a-comment  two  spaces"
TRICKY_DB = "p@ss/w:rd#1"


def test_item2_item3_rotation_diff_shows_keys_and_service_gets_exact_bytes(deployed_lab, tmp_path):
    original = yaml.safe_load((REPO / ".lab" / "secrets.yaml").read_text())
    rotated = {**original, "jwt_secret": TRICKY, "database_password": TRICKY_DB}
    secrets = tmp_path / "rotated.yaml"
    secrets.write_text(yaml.safe_dump(rotated))
    env_sha = sha("backend-api-1", "/etc/veza/backend-api.env")
    report = tmp_path / "report.json"
    try:
        done = inv_raw("api.setup", "--limit", "backend-api-1", "--diff", "--secrets", str(secrets),
                       "--report", str(report))
        assert done.returncode == 0, done
        printed = done.stdout + done.stderr + report.read_text()
        assert "JWT_SECRET: changed" in done.stdout and "DATABASE_URL: changed" in done.stdout
        for value in (original["jwt_secret"], original["database_password"], TRICKY, TRICKY_DB,
                      "p%40ss%2Fw%3Ard%231", "back\\\\slash"):
            assert value not in printed, value
        assert sha("backend-api-1", "/etc/veza/backend-api.env") != env_sha
        assert on("backend-api-1", "stat -c '%U %G %a' /etc/veza/backend-api.env").stdout.split() == \
            ["root", "veza-api", "640"]
        environ = api_environ()
        assert environ[b"JWT_SECRET"] == TRICKY.encode()
        url = urlsplit(environ[b"DATABASE_URL"].decode())
        assert (url.hostname, url.port, url.username, unquote(url.password)) == ("127.0.0.1", 5432, "veza", TRICKY_DB)
    finally:
        restored = inv_raw("api.setup", "--limit", "backend-api-1")
        assert restored.returncode == 0, restored
    assert sha("backend-api-1", "/etc/veza/backend-api.env") == env_sha


@pytest.mark.parametrize("value", ["a'b", 'a"b', "a\\b", "a$b ${c}", "  lead and trail  ", "#hash", "x=y;z", "`id`",
                                   "\\\"'$", "é ünïcode"])
def test_item3_env_file_round_trip_through_systemd(deployed_lab, value):
    transport = IncusTransport(lab_hosts().select("all", "backend-api-2")[0])
    transport.put(f"NAME={env_value(value)}\n".encode(), "/root/veza-roundtrip.env", mode="0600")
    try:
        done = subprocess.run(["incus", "exec", "--", container("backend-api-2"), "systemd-run", "--wait", "--pipe",
                               "-q", "-p", "EnvironmentFile=/root/veza-roundtrip.env", "printenv", "NAME"],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == value.encode() + b"\n"
    finally:
        on("backend-api-2", "rm -f /root/veza-roundtrip.env")


# --- 3. Injections refused before any host is touched --------------------------------------------

@pytest.mark.parametrize("task,name,value,files", [
    ("api.setup", "backend_api_binary_name", "veza-api\nExecStartPre=+/bin/touch /root/pwned", "unit"),
    ("api.setup", "backend_api_log_dir", "/var/log/veza\nExecStartPre=+/bin/true", "unit"),
    ("api.setup", "veza_environment", "lab\nLD_PRELOAD=/tmp/evil.so", "unit"),
    ("haproxy.setup", "haproxy_stream_health_path", "/h\n    server rogue 192.0.2.99:80", "cfg"),
    ("haproxy.setup", "haproxy_stream_balance", "roundrobin\n    server rogue 192.0.2.99:80", "cfg"),
    ("haproxy.setup", "haproxy_stream_balance", "roundrobin server rogue 192.0.2.99:80", "cfg"),
    ("haproxy.setup", "haproxy_health_path", "/api/v1/health\n", "cfg"),
])
def test_item3_injection_one_line_exit_2_nothing_changed(deployed_lab, tmp_path, task, name, value, files):
    host, paths = (("haproxy", ["/etc/haproxy/haproxy.cfg"]) if files == "cfg" else
                   ("backend-api-1", ["/etc/veza/backend-api.env", "/etc/systemd/system/veza-backend-api.service"]))
    before = sha(host, *paths)
    done = inv_raw(task, "--inventory", str(variant_inventory(tmp_path, {name: value})))
    assert_one_error_line(done, 2, name)
    assert done.stdout == ""  # no play started: not even the play title
    assert sha(host, *paths) == before
    assert on(host, "ls /root/pwned", check=False).returncode != 0


# --- 4. Files born private (ssh and incus transports) ---------------------------------------------

def ssh_host(tmp_path, name="backend-api-2", **extra):
    lab = lab_hosts().select("all", name)[0]

    class Host:
        pass

    host = Host()
    host.name, host.connection, host.ssh_address = name, "ssh", lab.vars["address"]
    host.vars = {"address": lab.vars["address"], "ssh_key_file": str(SSH_KEY),
                 "ssh_known_hosts": str(LAB_KNOWN_HOSTS), **extra}
    return host


def test_item4_ssh_and_incus_uploads_are_0600_and_refuse_a_planted_symlink(deployed_lab, tmp_path):
    ssh = SshTransport(ssh_host(tmp_path))
    incus_t = IncusTransport(lab_hosts().select("all", "backend-api-2")[0])
    try:
        for transport, path in ((ssh, "/root/veza-put-ssh"), (incus_t, "/root/veza-put-incus")):
            transport.put(b"SECRET=1\n", path, mode="0600")
            assert on("backend-api-2", f"stat -c '%U %a' {path}; cat {path}").stdout == "root 600\nSECRET=1\n"
        # A symlink planted at the (temporary) name an ssh upload writes: refused, its target untouched.
        on("backend-api-2", "echo keep > /root/victim && ln -sf /root/victim /root/veza-planted")
        with pytest.raises(Exception):
            ssh.put(b"EVIL\n", "/root/veza-planted", mode="0600")
        assert on("backend-api-2", "cat /root/victim").stdout == "keep\n"
    finally:
        ssh.close()
        on("backend-api-2", "rm -f /root/veza-put-ssh /root/veza-put-incus /root/victim /root/veza-planted")


# --- 5. SSH host keys and authentication ----------------------------------------------------------

def ssh_inventory(tmp_path, **ssh_vars) -> Path:
    """The lab with the balancer reached over ssh (root, lab key)."""
    return variant_inventory(tmp_path, host_vars={"haproxy": {
        "connection": "ssh", "ssh_key_file": str(SSH_KEY), **ssh_vars}})


def timed_status(inventory):
    started = time.monotonic()
    done = inv_raw("haproxy.status", "--inventory", str(inventory), timeout=120)
    return done, time.monotonic() - started


def test_item5_accept_new_records_key_in_new_0600_file_then_strict_works(deployed_lab, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"
    done, _ = timed_status(ssh_inventory(tmp_path, ssh_known_hosts=str(known), ssh_host_key_policy="accept-new"))
    assert done.returncode == 0 and "api_pool" in done.stdout, done
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert address("haproxy") in known.read_text()
    strict, _ = timed_status(ssh_inventory(tmp_path, ssh_known_hosts=str(known), ssh_host_key_policy="strict"))
    assert strict.returncode == 0, strict


def test_item5_strict_unknown_key_refused(deployed_lab, tmp_path):
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    done, seconds = timed_status(ssh_inventory(tmp_path, ssh_known_hosts=str(known)))
    assert_one_error_line(done, 1, "not known")
    assert known.read_text() == ""


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_item5_changed_host_key_refused_at_once(deployed_lab, tmp_path, policy):
    # Record the balancer's address with another lab container's key (same type): what a MITM presents.
    other = container("backend-api-2")
    lines = LAB_KNOWN_HOSTS.read_text().splitlines()
    other_address = lab_hosts().select("all", "backend-api-2")[0].vars["address"]
    forged = [line.replace(other_address, address("haproxy"), 1) for line in lines if line.startswith(other_address + " ")]
    assert forged, f"no key for {other} in {LAB_KNOWN_HOSTS}"
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(forged) + "\n")
    before = known.read_text()
    done, seconds = timed_status(ssh_inventory(tmp_path, ssh_known_hosts=str(known), ssh_host_key_policy=policy))
    assert_one_error_line(done, 1, "CHANGED")
    assert seconds < 2 + 1.5  # < 2 s of ssh, plus the interpreter and task start
    assert known.read_text() == before  # accept-new never overwrites a recorded key


@pytest.mark.parametrize("key_type, user", [(["ed25519"], None), (["rsa", "-b", "2048", "-m", "PEM"], "nobody"),
                                           (["ecdsa", "-m", "PEM"], None), (["rsa", "-b", "2048"], "nobody")])
def test_item5_wrong_client_key_or_user_refused_at_once(deployed_lab, tmp_path, key_type, user):
    """Whatever the key's type and file format: paramiko given a file name retried PEM RSA keys as a parse error."""
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", *key_type, "-N", "", "-f", str(wrong)], check=True, timeout=30)
    extra = {"ssh_user": user} if user else {}
    inventory = ssh_inventory(tmp_path, ssh_known_hosts=str(LAB_KNOWN_HOSTS), ssh_key_file=str(wrong), **extra)
    done, seconds = timed_status(inventory)
    assert_one_error_line(done, 1, "authentication")
    assert seconds < 2 + 1.5


@pytest.mark.parametrize("garbage", ["{balancer} ssh-ed25519 !!!not-base64!!!",
                                     "{balancer} ssh-ed25519",
                                     "|1|bad|hash ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"])
def test_item5_malformed_known_hosts_is_one_line(deployed_lab, tmp_path, garbage):
    known = tmp_path / "known_hosts"
    known.write_text(LAB_KNOWN_HOSTS.read_text() + garbage.format(balancer=address("haproxy")) + "\n")
    done, _ = timed_status(ssh_inventory(tmp_path, ssh_known_hosts=str(known)))
    # paramiko may skip a line it cannot parse; then the run simply works. Never a traceback.
    assert "Traceback" not in done.stdout + done.stderr
    if done.returncode != 0:
        assert_one_error_line(done, 1, "known_hosts")


def test_item7_ssh_command_timeout_is_one_result(deployed_lab, tmp_path):
    transport = SshTransport(ssh_host(tmp_path))
    try:
        started = time.monotonic()
        result = transport.run("sleep 10", warn=True, timeout=1)
        assert result.exited == 124 and time.monotonic() - started < 5
        assert transport.run("echo still-usable", warn=True, timeout=10).stdout.strip() == "still-usable"
    finally:
        transport.close()


# --- 7. haproxy.status with HAProxy down ------------------------------------------------------------

def test_item7_status_with_haproxy_stopped_is_one_line_exit_1(deployed_lab):
    on("haproxy", "systemctl stop haproxy")
    try:
        done = inv_raw("haproxy.status")
        assert_one_error_line(done, 1, "haproxy")
    finally:
        on("haproxy", "systemctl start haproxy")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and inv_raw("haproxy.status").returncode != 0:
            time.sleep(1)


def test_item7_reload_timeout_string_reloads(deployed_lab):
    done = inv_raw("haproxy.setup", "--set", "haproxy_reload_timeout='5'", "--set", "haproxy_timeout_queue=11s")
    try:
        assert done.returncode == 0, done
        assert "handler: reload haproxy" in done.stdout
    finally:
        assert inv_raw("haproxy.setup").returncode == 0


# --- 10. Pending handlers survive a failed run ------------------------------------------------------

def worker_pid() -> str:
    return on("haproxy", "pgrep -n -P $(systemctl show -p MainPID --value haproxy) haproxy").stdout.strip()


def test_item10_handler_of_a_failed_run_runs_on_the_next(deployed_lab):
    pending = "/var/lib/veza-ops/pending-handlers"
    worker = worker_pid()
    # Masking the (running) unit makes the play's later 'service haproxy' step fail: after the config
    # changed, before the reload handler. Deterministic, and haproxy keeps running meanwhile.
    on("haproxy", "systemctl mask haproxy >/dev/null 2>&1")
    try:
        failed = inv_raw("haproxy.setup", "--set", "haproxy_timeout_queue=12s")
        assert failed.returncode == 1, failed
        assert "timeout queue 12s" in on("haproxy", "cat /etc/haproxy/haproxy.cfg").stdout
        assert "reload haproxy" in on("haproxy", f"cat {pending}").stdout
        assert worker_pid() == worker  # not reloaded
    finally:
        on("haproxy", "systemctl unmask haproxy >/dev/null 2>&1")
    try:
        again = inv_raw("haproxy.setup", "--set", "haproxy_timeout_queue=12s")
        assert again.returncode == 0, again
        assert "file /etc/haproxy/haproxy.cfg" in again.stdout and "handler: reload haproxy" in again.stdout
        file_line = next(line for line in again.stdout.splitlines() if "file /etc/haproxy/haproxy.cfg" in line)
        assert " ok " in file_line  # the file itself did not change this time
        assert worker_pid() != worker
        assert on("haproxy", f"test -e {pending}", check=False).returncode != 0
    finally:
        assert inv_raw("haproxy.setup").returncode == 0


# --- 9. SIGTERM to test.failover -----------------------------------------------------------------------

def test_item9_sigterm_restores_the_victim_and_exits_143(deployed_lab):
    victim = container("backend-api-1")
    process = subprocess.Popen([*INV, "test.failover", "--no-load", "--no-websocket"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        stopped = False
        while time.monotonic() < deadline and process.poll() is None:
            state = subprocess.run(["incus", "list", "-c", "s", "-f", "csv", "--", f"^{victim}$"],
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            if state == "STOPPED":
                stopped = True
                break
            time.sleep(0.3)
        assert stopped, "the victim was never stopped"
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        subprocess.run(["incus", "start", "--", victim], capture_output=True, timeout=120)
    assert process.returncode == 143, out
    assert "Traceback" not in out
    state = subprocess.run(["incus", "list", "-c", "s", "-f", "csv", "--", f"^{victim}$"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    assert state == "RUNNING", out
