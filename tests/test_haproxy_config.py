"""The haproxy template: every rendering passes the real `haproxy -c`, routes and sticks as designed.

Checked renderings: the lab inventory, an inventory without the upstream groups
(fallback lists), TLS with a throwaway self-signed cert, unusual ports, and the
seed's plain settings (haproxy_failover_tuning: false). One live test runs the
rendered config on loopback against tiny HTTP servers to see the routing work.
"""

import http.server
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

from conftest import end_process

from fabfile.haproxy_runtime import RuntimeAPI  # noqa: E402
from fabfile.inventory import load_inventory  # noqa: E402
from fabfile.polling import wait_until  # noqa: E402
from fabfile.roles.haproxy_vars import DEFAULTS, template_vars, validate_vars  # noqa: E402
from fabfile.templating import TemplateError, render  # noqa: E402
from fabfile.transports import LocalTransport  # noqa: E402

TEMPLATE = "haproxy/haproxy.cfg.j2"
HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy binary absent: apt-get install -y haproxy to check rendered configs for real"
)


def write_inventory(tmp_path, children, all_vars=None) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"all": {"vars": {"connection": "local", **(all_vars or {})}, "children": children}}))
    return path


def lab_vars(**overrides):
    inventory = load_inventory(ROOT / "hosts.yaml", cli_vars=overrides)
    return template_vars(inventory.hosts["haproxy"], inventory)


def haproxy_check(text: str, tmp_path) -> None:
    """The real validator: `haproxy -c -f FILE` must say the file is valid."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    done = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"haproxy -c failed:\n{done.stdout}{done.stderr}\n---\n{text}"


def section(text: str, header: str) -> str:
    """The lines of one config section (from its header to the next blank line)."""
    match = re.search(rf"^{re.escape(header)}\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    assert match, f"no section {header!r}"
    return match.group(1)


def server_lines(text: str, header: str) -> list:
    return [line.strip() for line in section(text, header).splitlines() if line.strip().startswith("server ")]


# --- renderings that haproxy -c accepts ----------------------------------------------

@needs_haproxy
def test_lab_inventory_renders_valid_config_with_routing_and_stickiness(tmp_path):
    variables = lab_vars()
    assert validate_vars(variables) == []
    text = render(TEMPLATE, variables)
    haproxy_check(text, tmp_path)

    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in text
    assert "stats socket ipv4@127.0.0.1:9100 level user" in text
    assert "\n    daemon" not in text  # Debian's unit runs -Ws in the foreground
    assert "ssl-default-bind" not in text and ":443" not in text  # no cert, no TLS
    api = section(text, "backend api_pool")
    assert "balance roundrobin" in api
    assert "cookie SERVERID insert indirect nocache" in api
    assert "option httpchk GET /api/v1/health" in api and "http-check expect status 200" in api
    inventory = load_inventory(ROOT / "hosts.yaml")
    api_hosts = [(h.name, h.vars["address"]) for h in inventory.group("backend_api_instances")]
    assert [name for name, _ in api_hosts] == ["backend-api-1", "backend-api-2", "backend-api-3"]
    assert server_lines(text, "backend api_pool") == [
        f"server {name} {address}:8080 cookie {name} check inter 1s fall 3 rise 2 "
        "fastinter 200ms downinter 1s observe layer4 error-limit 2 on-error mark-down slowstart 30s"
        for name, address in api_hosts
    ]
    assert "on-marked-down" not in api  # it would abort requests being retried
    ws = section(text, "backend api_ws_pool")
    assert "cookie SERVERID insert indirect nocache" in ws
    assert server_lines(text, "backend api_ws_pool") == [
        f"server {name} {address}:8080 cookie {name} track api_pool/{name} on-marked-down shutdown-sessions"
        for name, address in api_hosts
    ]
    stream = section(text, "backend stream_pool")
    assert "balance uri path-only depth 2" in stream and "hash-type consistent" in stream
    assert [line.split()[1:3] for line in server_lines(text, "backend stream_pool")] == [
        [h.name, f"{h.vars['address']}:8082"] for h in inventory.group("stream_server_instances")
    ]
    frontend = section(text, "frontend veza_http")
    assert "use_backend api_ws_pool if is_api_ws is_ws_upgrade" in frontend
    # The lab's exporter listens on the balancer's own address only (test.failover reads it).
    metrics = section(text, "frontend veza_metrics")
    assert "bind 0.0.0.0:8405" in metrics  # the same line on both balancers
    assert "http-request use-service prometheus-exporter if { path /metrics }" in metrics
    assert frontend.index("api_ws_pool") < frontend.index("use_backend api_pool")  # WS rule must win
    defaults = section(text, "defaults")
    for line in ("timeout connect 500ms", "timeout check 400ms", "retries 3", "option redispatch 1",
                 "retry-on conn-failure empty-response response-timeout", "http-reuse never"):
        assert line in defaults
    # The health route keeps a short budget by default; long API calls keep timeout server 30s.
    assert "http-request set-timeout server 1s if { path_beg /api/v1/health }" in api
    assert "timeout server 30s" in defaults
    # keepalived's check reaches a URI HAProxy answers itself, whatever the backends do.
    assert "monitor-uri /lb-health" in frontend


@needs_haproxy
def test_route_budgets_render_longest_prefix_last_so_it_wins(tmp_path):
    budgets = {"/api/": "20s", "/api/v1/search/suggest": "300ms", "/api/v1/search": "1500ms"}
    variables = lab_vars(haproxy_api_route_timeouts=budgets)
    assert validate_vars(variables) == []
    text = render(TEMPLATE, variables)
    haproxy_check(text, tmp_path)
    rules = [line.strip() for line in section(text, "backend api_pool").splitlines() if "set-timeout" in line]
    assert rules == ["http-request set-timeout server 20s if { path_beg /api/ }",
                     "http-request set-timeout server 1500ms if { path_beg /api/v1/search }",
                     "http-request set-timeout server 300ms if { path_beg /api/v1/search/suggest }"]
    assert "/api/v1/health" not in "\n".join(rules)  # the inventory's mapping replaces the default one


@pytest.mark.parametrize("budgets, expected", [
    ({"/api/v1/tracks": "2 seconds"}, "haproxy_api_route_timeouts[/api/v1/tracks]: '2 seconds' is not an HAProxy time"),
    ({"/api/v1/tracks": "31s"}, "haproxy_api_route_timeouts[/api/v1/tracks]: 31s must be above zero and no longer "
                                "than haproxy_timeout_server (30s)"),
    ({"/api/v1/tracks": "0"}, "must be above zero"),
    ({"/api/v1/tracks }": "1s"}, "haproxy_api_route_timeouts[/api/v1/tracks }]: '/api/v1/tracks }' is not a URL path"),
    ({"api/v1": "1s"}, "is not a URL path"),
    (["/api/v1/tracks", "1s"], "haproxy_api_route_timeouts: must be a mapping of path prefix to timeout"),
])
def test_route_budgets_that_do_not_parse_or_exceed_timeout_server_are_refused(budgets, expected):
    problems = validate_vars(lab_vars(haproxy_api_route_timeouts=budgets))
    assert len(problems) == 1 and problems[0].startswith("haproxy_api_route_timeouts") and expected in problems[0], \
        problems


@needs_haproxy
def test_missing_groups_fall_back_to_static_lists(tmp_path):
    inventory_path = write_inventory(tmp_path, {"haproxy": {"hosts": {"haproxy": {"address": "10.0.0.10"}}}})
    inventory = load_inventory(inventory_path)
    variables = template_vars(inventory.hosts["haproxy"], inventory)
    assert variables["api_servers_source"].startswith("fallback") and variables["stream_servers_source"].startswith("fallback")
    assert variables["api_servers"] == DEFAULTS["haproxy_backend_api_fallback"]
    text = render(TEMPLATE, variables)
    haproxy_check(text, tmp_path)
    assert server_lines(text, "backend api_pool")[0].startswith("server backend-api-1 127.0.0.1:8080 cookie backend-api-1 ")
    assert server_lines(text, "backend stream_pool")[0].startswith("server stream-server-1 127.0.0.1:8082 ")


@needs_haproxy
def test_fallback_lists_come_from_host_vars(tmp_path):
    fallback = [{"name": "api-a", "address": "192.0.2.1", "port": 9000}, {"name": "api-b", "address": "192.0.2.2", "port": 9001}]
    inventory_path = write_inventory(tmp_path, {"haproxy": {"hosts": {"haproxy": {"haproxy_backend_api_fallback": fallback}}}})
    inventory = load_inventory(inventory_path)
    text = render(TEMPLATE, template_vars(inventory.hosts["haproxy"], inventory))
    haproxy_check(text, tmp_path)
    assert [line.split()[1:5] for line in server_lines(text, "backend api_ws_pool")] == [
        ["api-a", "192.0.2.1:9000", "cookie", "api-a"], ["api-b", "192.0.2.2:9001", "cookie", "api-b"],
    ]


@needs_haproxy
def test_tls_with_a_self_signed_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary absent: needed to make a throwaway certificate")
    key, cert, pem = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "veza.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=veza.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    pem.write_text(cert.read_text() + key.read_text())  # HAProxy wants cert + key in one PEM
    text = render(TEMPLATE, lab_vars(haproxy_tls_cert_path=str(pem)))
    haproxy_check(text, tmp_path)
    glob = section(text, "global")
    assert "ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:" in glob
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets" in glob
    assert re.search(r"ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:\S+", glob)
    assert f"bind :443 ssl crt {pem} alpn h2,http/1.1" in section(text, "frontend veza_http")


@needs_haproxy
def test_unusual_ports_from_host_vars(tmp_path):
    inventory_path = write_inventory(tmp_path, {
        "haproxy": {"hosts": {"haproxy": {
            "haproxy_http_port": 8081, "haproxy_https_port": 8443, "haproxy_stats_socket_port": 19100,
            "haproxy_bind_address": "127.0.0.1",
        }}},
        "backend_api_instances": {"vars": {"backend_api_listen_port": 18080}, "hosts": {
            "backend-api-1": {"address": "192.0.2.21"},
            "backend-api-2": {"address": "192.0.2.22", "backend_api_listen_port": 28080},
        }},
        "stream_server_instances": {"hosts": {"stream-server-1": {"address": "192.0.2.31", "stream_server_listen_port": 1935}}},
    })
    inventory = load_inventory(inventory_path)
    variables = template_vars(inventory.hosts["haproxy"], inventory)
    assert validate_vars(variables) == []
    text = render(TEMPLATE, variables)
    haproxy_check(text, tmp_path)
    assert "bind 127.0.0.1:8081" in text and "stats socket ipv4@127.0.0.1:19100 level user" in text
    assert [line.split()[2] for line in server_lines(text, "backend api_pool")] == ["192.0.2.21:18080", "192.0.2.22:28080"]
    assert [line.split()[2] for line in server_lines(text, "backend stream_pool")] == ["192.0.2.31:1935"]


@needs_haproxy
def test_seed_plain_settings_for_comparison(tmp_path):
    text = render(TEMPLATE, lab_vars(haproxy_failover_tuning=False))
    haproxy_check(text, tmp_path)
    for lever in ("fastinter", "downinter", "observe", "retry-on", "http-reuse", "timeout check", "disable-l7-retry"):
        assert lever not in text
    assert "timeout connect 5s" in text and "option redispatch\n" in text
    # Same steady state as the tuned rendering, plus the seed's shutdown-sessions on api_pool.
    assert all(line.endswith("check inter 5s fall 3 rise 2 slowstart 30s on-marked-down shutdown-sessions")
               for line in server_lines(text, "backend api_pool"))
    # Route budgets are not a failover lever: without retries a late answer becomes a 504, sooner.
    assert "http-request set-timeout server 1s if { path_beg /api/v1/health }" in text


# --- template and variable errors ------------------------------------------------------

def test_missing_variable_raises_template_error_naming_it():
    variables = lab_vars()
    del variables["haproxy_cookie_name"]
    with pytest.raises(TemplateError, match="haproxy_cookie_name"):
        render(TEMPLATE, variables)


def test_validate_vars_catches_nonsense():
    variables = lab_vars(haproxy_api_balance="nonsense", haproxy_check_fall=0, haproxy_timeout_client="30 s",
                         haproxy_failover_retry_on="conn-failure sometimes", haproxy_stream_hash_type="jump")
    problems = validate_vars(variables)
    assert problems[0] == (
        "haproxy_api_balance: 'nonsense' is not a balance algorithm "
        "(roundrobin, static-rr, leastconn, first, source, uri, hdr(...), random, url_param, rdp-cookie, hash)"
    )
    joined = "\n".join(problems)
    for name in ("haproxy_check_fall", "haproxy_timeout_client", "haproxy_failover_retry_on: sometimes", "haproxy_stream_hash_type"):
        assert name in joined
    assert len(problems) == 5


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "uri", "uri path-only depth 2", "uri whole len 12",
                                     "hdr(X-Track)", "random(2)", "url_param track check_post", "hash path,field(3,/)"])
def test_validate_vars_accepts_real_algorithms(balance):
    assert validate_vars(lab_vars(haproxy_stream_balance=balance)) == []


def test_validate_vars_catches_bad_servers():
    variables = lab_vars()
    variables["api_servers"] = [{"name": "a b", "address": "", "port": 70000}]
    problems = "\n".join(validate_vars(variables))
    assert "name 'a b'" in problems and "no address" in problems and "port" in problems


# --- live: the rendered config routes on loopback -------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def named_server(name):
    """A loopback HTTP server answering every GET with its own name."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Quiet(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # health checks hang up early

    server = Quiet(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(port, path, headers=None):
    """GET through the balancer; returns (body, headers). No proxies: loopback only."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with opener.open(request, timeout=5) as response:
            return response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}", error.headers


@needs_haproxy
def test_live_routing_stickiness_and_track_hashing(tmp_path):
    names = ["backend-api-1", "backend-api-2", "stream-server-1", "stream-server-2"]
    servers = {name: named_server(name) for name in names}
    front_port, stats_port = free_port(), free_port()
    upstream = lambda prefix: [{"name": n, "address": "127.0.0.1", "port": s.server_address[1]}
                               for n, s in servers.items() if n.startswith(prefix)]
    inventory = load_inventory(write_inventory(tmp_path, {"haproxy": {"hosts": {"haproxy": {
        "haproxy_bind_address": "127.0.0.1", "haproxy_http_port": front_port, "haproxy_stats_socket_port": stats_port,
        "haproxy_admin_socket": str(tmp_path / "admin.sock"), "haproxy_server_state_file": str(tmp_path / "state"),
        "haproxy_backend_api_fallback": upstream("backend-api"), "haproxy_stream_server_fallback": upstream("stream"),
        "haproxy_health_path": "/api/v1/health",
    }}}}))
    text = render(TEMPLATE, template_vars(inventory.hosts["haproxy"], inventory))
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = RuntimeAPI(LocalTransport(inventory.hosts["haproxy"]), str(tmp_path / "admin.sock"))
        wait_until(lambda: api.show_stat(), done=lambda stats: len(stats) == 6 and all(s.is_up for s in stats),
                   timeout=15, interval=0.1, what="every server UP")

        first, headers = fetch(front_port, "/api/v1/health")
        cookie = headers["Set-Cookie"].split(";")[0]
        assert cookie == f"SERVERID={first}"
        assert {fetch(front_port, "/api/v1/tracks", {"Cookie": cookie})[0] for _ in range(6)} == {first}
        assert {fetch(front_port, "/api/v1/tracks")[0] for _ in range(4)} == {"backend-api-1", "backend-api-2"}

        ws_headers = {"Cookie": cookie, "Upgrade": "websocket", "Connection": "Upgrade"}
        assert fetch(front_port, "/api/v1/ws", ws_headers)[0] == first
        ws_stats = {s.server: int(s.raw["stot"]) for s in api.show_stat() if s.pool == "api_ws_pool"}
        assert ws_stats[first] == 1  # the upgrade went through the WS backend, to the cookie's server

        for track in ("t-1", "t-2", "t-3", "t-4", "t-5", "t-6", "t-7", "t-8"):
            owners = {fetch(front_port, f"/hls/{track}/{segment}")[0] for segment in ("index.m3u8", "seg-1.ts", "seg-2.ts")}
            assert len(owners) == 1, f"track {track} split over {owners}"
        owners = {fetch(front_port, f"/hls/track-{n}/index.m3u8")[0] for n in range(20)}
        assert owners == {"stream-server-1", "stream-server-2"}

        assert fetch(front_port, "/elsewhere")[0] == "HTTP 404"
    finally:
        end_process(process)  # only the haproxy this test started, by its PID
        for server in servers.values():
            server.shutdown()
            server.server_close()


# --- reloads under keep-alive clients --------------------------------------------------------

def test_idle_keepalive_connections_are_closed_after_their_next_response_on_a_reload(tmp_path):
    text = render(TEMPLATE, lab_vars())
    assert "    option idle-close-on-response\n" in section(text, "defaults")
    assert "\n    close-spread-time " not in text  # it closes idle connections during its window again
    assert "idle-close-on-response" not in render(TEMPLATE, lab_vars(haproxy_idle_close_on_response=False))


@pytest.mark.parametrize("overrides, expected", [
    ({"haproxy_hard_stop_after": "10s"}, "haproxy_hard_stop_after: 10s must be longer than haproxy_timeout_server "
                                         "(30s): a reload's old worker would cut what it still serves"),
    ({"haproxy_hard_stop_after": "1m", "haproxy_timeout_http_keep_alive": "2m"},
     "haproxy_hard_stop_after: 1m must be longer than haproxy_timeout_http_keep_alive (2m): a reload's old worker "
     "would cut what it still serves"),
    ({"haproxy_idle_close_on_response": "yes please"},
     "haproxy_idle_close_on_response: 'yes please' is not one of False, True"),
])
def test_old_worker_settings_that_would_cut_clients_are_refused(overrides, expected):
    assert validate_vars(lab_vars(**overrides)) == [expected]


def _reloads_under_keepalive_load(tmp_path, idle_close_on_response: bool) -> tuple:
    """A real haproxy (master-worker, as Debian's unit runs it) on loopback, two reloads (SIGUSR2 to
    the master) under 40 req/s on 4 kept-alive connections; (samples, connections opened)."""
    from fabfile.loadtest.keepalive import KeepAliveLoad

    server = named_server("backend-api-1")
    front_port = free_port()
    inventory = load_inventory(write_inventory(tmp_path, {"haproxy": {"hosts": {"haproxy": {
        "haproxy_bind_address": "127.0.0.1", "haproxy_http_port": front_port, "haproxy_stats_socket_port": free_port(),
        "haproxy_admin_socket": str(tmp_path / "admin.sock"), "haproxy_server_state_file": str(tmp_path / "state"),
        "haproxy_backend_api_fallback": [{"name": "backend-api-1", "address": "127.0.0.1",
                                          "port": server.server_address[1]}],
        "haproxy_idle_close_on_response": idle_close_on_response,
    }}}}))
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(TEMPLATE, template_vars(inventory.hosts["haproxy"], inventory)))
    master = subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: fetch(front_port, "/api/v1/health")[0], done=lambda body: body == "backend-api-1",
                   timeout=15, interval=0.1, what="haproxy answering")
        load = KeepAliveLoad(f"http://127.0.0.1:{front_port}", "/api/v1/health", rate=40, connections=4,
                             timeout=2, max_seconds=4)
        load.start()
        for _ in range(2):
            time.sleep(1.2)
            before = _workers(master.pid)
            master.send_signal(signal.SIGUSR2)  # the master's reload: a new worker, the old one soft-stops
            wait_until(lambda: _workers(master.pid), done=lambda now: bool(now - before), timeout=15, interval=0.05,
                       what="a new haproxy worker")
        assert load.wait(15), "the load did not end by itself"
        return load.samples, load.connections_opened
    finally:
        end_process(master)  # the master this test started (its workers follow it), by its PID
        server.shutdown()
        server.server_close()


def _workers(master_pid: int) -> set:
    """PIDs of the master's worker processes (its children), from /proc."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return set(children.read_text().split()) if children.exists() else set()


@needs_haproxy
def test_live_reloads_lose_no_keepalive_request_with_idle_close_on_response(tmp_path):
    samples, opened = _reloads_under_keepalive_load(tmp_path, idle_close_on_response=True)
    assert len(samples) == 160 and [s for s in samples if s.failed] == []
    assert opened >= 4 + 2 * 4  # every connection was closed after a response and opened again, per reload


@needs_haproxy
def test_live_reloads_without_it_fail_requests_on_idle_connections(tmp_path):
    """The control: the same run with HAProxy's default soft-stop fails requests on the kept-alive
    connections (so the test above would see a regression)."""
    samples, _ = _reloads_under_keepalive_load(tmp_path, idle_close_on_response=False)
    failed = [s for s in samples if s.failed]
    assert len(samples) == 160 and failed and {s.outcome for s in failed} == {"reset"}
