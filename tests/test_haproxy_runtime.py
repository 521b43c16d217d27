"""HAProxy runtime API client: parsing real `show stat` output, and a live local haproxy.

SHOW_STAT_SAMPLE was captured from HAProxy 2.6.12 (Debian 12) on loopback: a
live health endpoint, a closed port (DOWN), a server drained during its first
checks ("DRAIN 1/3"), one not yet checked ("UP 1/3"), one without checks and one
disabled (MAINT). The live tests start the same kind of haproxy, talk to it
through fabfile.haproxy_runtime over the local transport (socat), and stop it by
its PID.
"""

import http.server
import shutil
import socket
import subprocess
import threading

import pytest
from conftest import end_process

from fabfile.haproxy_runtime import (  # noqa: E402
    runtime_command,
    RuntimeAPI,
    RuntimeAPIError,
    ServerStat,
    parse_show_stat,
)
from fabfile.haproxy_state import StateParseError  # noqa: E402
from fabfile.inventory import Host  # noqa: E402
from fabfile.polling import wait_until  # noqa: E402
from fabfile.process import Result  # noqa: E402
from fabfile.transports import LocalTransport  # noqa: E402

SHOW_STAT_SAMPLE = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
web,FRONTEND,,,0,0,9983,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
api_pool,backend-api-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,1,0,,1,3,1,,0,,2,0,,0,L7OK,200,1,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,3,4,,,,127.0.0.1:37415,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
api_pool,backend-api-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,0,0,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:38071,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
api_pool,backend-api-3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DRAIN 1/3,1,1,0,0,0,0,0,,1,3,3,,0,,2,0,,0,INI,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Initializing,,2,3,2,,,,127.0.0.1:37415,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
api_pool,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,1,0,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,1,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,8,8,556,186,0,0,
stream_pool,stream-server-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/3,1,1,0,0,0,1,0,,1,4,1,,0,,2,0,,0,INI,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Initializing,,2,3,2,,,,127.0.0.1:37415,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
stream_pool,stream-server-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,1,,,1,4,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:38071,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
stream_pool,stream-server-3,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,1,1,,1,4,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:38071,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
stream_pool,BACKEND,0,0,0,0,1,0,0,0,0,0,,0,0,0,0,UP,2,2,0,,0,1,0,,1,4,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,2,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
"""


# --- parsing -------------------------------------------------------------------

def by_name(stats):
    return {(stat.pool, stat.server): stat for stat in stats}


def test_parse_real_sample_servers_only():
    stats = by_name(parse_show_stat(SHOW_STAT_SAMPLE))
    assert list(stats) == [
        ("api_pool", "backend-api-1"), ("api_pool", "backend-api-2"), ("api_pool", "backend-api-3"),
        ("stream_pool", "stream-server-1"), ("stream_pool", "stream-server-2"), ("stream_pool", "stream-server-3"),
    ]
    up = stats["api_pool", "backend-api-1"]
    assert (up.status, up.weight, up.current_sessions, up.last_check) == ("UP", 1, 0, "L7OK")
    assert up.is_up and not up.is_down
    down = stats["api_pool", "backend-api-2"]
    assert down.is_down and not down.is_up
    assert (down.last_check, down.last_check_detail) == ("L4CON", "Connection refused")
    assert stats["api_pool", "backend-api-3"].status == "DRAIN 1/3"
    assert stats["stream_pool", "stream-server-2"].status == "no check"
    assert stats["stream_pool", "stream-server-3"].status == "MAINT"
    assert down.raw["addr"].startswith("127.0.0.1:")


def test_in_between_states_are_neither_up_nor_down():
    stats = by_name(parse_show_stat(SHOW_STAT_SAMPLE))
    for key in [("stream_pool", "stream-server-1"), ("api_pool", "backend-api-3"),
                ("stream_pool", "stream-server-2"), ("stream_pool", "stream-server-3")]:
        assert not stats[key].is_up and not stats[key].is_down, key
    going_up = ServerStat("api_pool", "x", "DOWN 1/2", 1, 0, "L7OK")
    assert not going_up.is_up and not going_up.is_down


def test_aggregate_rows_on_request():
    stats = parse_show_stat(SHOW_STAT_SAMPLE, include_aggregates=True)
    aggregates = [(s.pool, s.server, s.status) for s in stats if s.is_aggregate]
    assert aggregates == [("web", "FRONTEND", "OPEN"), ("api_pool", "BACKEND", "UP"), ("stream_pool", "BACKEND", "UP")]


def test_parse_rejects_text_that_is_not_show_stat():
    with pytest.raises(StateParseError, match="not a 'show stat' CSV"):
        parse_show_stat("Unknown command. Please enter one of the following commands only :\n")


# --- client against a fake transport ---------------------------------------------

class RecordingTransport:
    """Answers every command with one canned Result and remembers the commands."""

    name = "haproxy"

    def __init__(self, exited=0, stdout="", stderr=""):
        self.reply = (exited, stdout, stderr)
        self.commands = []

    def run(self, command, *, warn=False, timeout=None, stdin=None):
        self.commands.append(command)
        return Result(command, *self.reply)


def test_commands_are_quoted_for_the_shell():
    transport = RecordingTransport()
    RuntimeAPI(transport).set_state("api_pool", "backend-api-1", "drain")
    assert transport.commands == [runtime_command("set server api_pool/backend-api-1 state drain", save_states=True)]
    # A state change is written to the server-state file in the same round trip.
    assert transport.commands[0].command == (
        "echo 'set server api_pool/backend-api-1 state drain' | socat -t 2 stdio UNIX-CONNECT:/run/haproxy/admin.sock"
        " && if [ -x /usr/local/lib/veza-ops/haproxy-server-state ]; then "
        "/usr/local/lib/veza-ops/haproxy-server-state save; fi")
    assert RuntimeAPI(transport, "/run/other.sock").address == "/run/other.sock"


def test_ready_and_health_go_in_one_round_trip():
    transport = RecordingTransport()
    RuntimeAPI(transport).set_state("api_pool", "backend-api-1", "ready", health="up")
    assert transport.commands == [runtime_command(["set server api_pool/backend-api-1 state ready",
                                                   "set server api_pool/backend-api-1 health up"], save_states=True)]
    assert transport.commands[0].command.startswith(
        "echo 'set server api_pool/backend-api-1 state ready; set server api_pool/backend-api-1 health up' | socat")
    with pytest.raises(ValueError, match="one command on one line"):
        runtime_command(["show stat", "set server api_pool/b state maint; shutdown sessions server api_pool/b"])


def test_a_command_cannot_carry_a_second_one():
    with pytest.raises(ValueError, match="one command on one line"):
        runtime_command("show stat\nset server api_pool/b state maint")


def test_set_state_validates_the_state():
    with pytest.raises(RuntimeAPIError, match="ready, drain, maint"):
        RuntimeAPI(RecordingTransport()).set_state("api_pool", "backend-api-1", "down")


def test_clear_error_when_the_socket_does_not_answer():
    transport = RecordingTransport(1, "", "socat[1] E connect(5, AF=1 /run/haproxy/admin.sock, 25): No such file")
    with pytest.raises(RuntimeAPIError, match=r"haproxy: HAProxy runtime API at /run/haproxy/admin.sock does not answer .*No such file"):
        RuntimeAPI(transport).show_stat()


def test_server_names_what_exists_when_missing():
    api = RuntimeAPI(RecordingTransport(0, SHOW_STAT_SAMPLE))
    assert api.server("api_pool", "backend-api-2").is_down
    with pytest.raises(RuntimeAPIError, match=r"no server api_pool/backend-api-9 .*servers of api_pool: backend-api-1, backend-api-2"):
        api.server("api_pool", "backend-api-9")
    with pytest.raises(RuntimeAPIError, match=r"no server nope/backend-api-1 .*no pool 'nope'; pools: api_pool, stream_pool"):
        api.server("nope", "backend-api-1")


def test_an_empty_show_stat_is_asked_once_more_then_reported():
    class FlakyOnce(RecordingTransport):
        def run(self, command, *, warn=False, timeout=None, stdin=None):
            self.commands.append(command)
            return Result(command, 0, "" if len(self.commands) == 1 else SHOW_STAT_SAMPLE, "")

    flaky = FlakyOnce()
    assert RuntimeAPI(flaky).server("api_pool", "backend-api-2").is_down and len(flaky.commands) == 2
    silent = RecordingTransport(0, "")
    with pytest.raises(RuntimeAPIError, match=r"empty reply to 'show stat' .*\(twice\)"):
        RuntimeAPI(silent).show_stat()
    assert len(silent.commands) == 2


def test_set_state_reports_a_refusal():
    api = RuntimeAPI(RecordingTransport(0, "No such server.\n\n"))
    with pytest.raises(RuntimeAPIError, match="refused: No such server."):
        api.set_state("api_pool", "ghost", "maint")


# --- live: a real haproxy on loopback ------------------------------------------------

HAPROXY = shutil.which("haproxy")
SOCAT = shutil.which("socat")
live = pytest.mark.skipif(not (HAPROXY and SOCAT), reason="needs the haproxy and socat binaries (apt-get install -y haproxy socat)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # health checks close early; not worth a traceback


@pytest.fixture
def local_haproxy(tmp_path):
    """A haproxy on loopback: one healthy server, one on a closed port; yields (api, ports)."""
    health = QuietServer(("127.0.0.1", 0), HealthHandler)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    front_port, closed_port = free_port(), free_port()
    socket_path = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n"
        f"    stats socket {socket_path} mode 600 level admin\n"
        "defaults\n    mode http\n    timeout connect 200ms\n    timeout client 5s\n    timeout server 5s\n"
        f"frontend web\n    bind 127.0.0.1:{front_port}\n    default_backend api_pool\n"
        "backend api_pool\n    option httpchk GET /api/v1/health\n"
        f"    server backend-api-1 127.0.0.1:{health.server_address[1]} check inter 100ms fall 2 rise 1\n"
        f"    server backend-api-2 127.0.0.1:{closed_port} check inter 100ms fall 2 rise 1\n"
    )
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        transport = LocalTransport(Host("haproxy", {"connection": "local"}, ["all"]))
        yield RuntimeAPI(transport, str(socket_path)), process
    finally:
        end_process(process)  # only the haproxy this test started, by its PID
        health.shutdown()
        health.server_close()


@live
def test_live_show_stat_and_state_changes(local_haproxy):
    api, process = local_haproxy
    wait_until(api.show_stat, timeout=10, interval=0.05, what="the runtime API to answer")
    wait_until(lambda: (api.server("api_pool", "backend-api-1"), api.server("api_pool", "backend-api-2")),
               done=lambda pair: pair[0].is_up and pair[1].is_down, timeout=10, interval=0.05,
               what="backend-api-1 UP and backend-api-2 DOWN")
    assert api.server("api_pool", "backend-api-2").last_check == "L4CON"

    api.set_state("api_pool", "backend-api-1", "drain")
    assert api.server("api_pool", "backend-api-1").status == "DRAIN"
    api.set_state("api_pool", "backend-api-1", "maint")
    assert api.server("api_pool", "backend-api-1").status == "MAINT"
    api.set_state("api_pool", "backend-api-1", "ready")
    waited = wait_until(lambda: api.server("api_pool", "backend-api-1"), done=lambda s: s.is_up,
                        timeout=10, interval=0.05, what="backend-api-1 UP again")
    assert waited.value.status == "UP"
    api.set_state("api_pool", "backend-api-1", "maint")
    api.set_state("api_pool", "backend-api-1", "ready", health="up")  # one round trip; no wait for `rise` checks
    assert api.server("api_pool", "backend-api-1").status == "UP"
    with pytest.raises(RuntimeAPIError, match="refused"):
        api.set_state("api_pool", "ghost", "drain")
    assert process.poll() is None


@live
def test_live_socket_not_answering_is_a_clear_error(tmp_path):
    transport = LocalTransport(Host("haproxy", {"connection": "local"}, ["all"]))
    with pytest.raises(RuntimeAPIError, match="does not answer"):
        RuntimeAPI(transport, str(tmp_path / "no-haproxy-here.sock")).show_stat()
