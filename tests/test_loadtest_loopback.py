"""The load-test engine against local servers on 127.0.0.1 (started and ended here): the open model,
error classes, per-backend split, HLS track consistency, WS stickiness, the ramp, the facade, the task.

Timing bounds are generous (a loaded 2-core machine); each assertion would fail for a closed-loop
client, a misclassified error or a broken split, not for a slow run.
"""

import json
import time

import pytest
from invoke import Collection, Program
from loadtest_fixtures import closed_port, closing_server, fake_lb, silent_server

from fabfile.loadtest.engine import LoadSettings, RampSettings, run_fixed, run_ramp
from fabfile.loadtest.facade import BackgroundLoad, SessionClosed, fetch, open_session, phase_counts
from fabfile.tasks.test.load import load


@pytest.fixture(scope="module")
def lb():
    with fake_lb() as url:
        yield url


# -- the open model ------------------------------------------------------------------

def test_a_stall_shows_in_latency_and_does_not_slow_the_schedule():
    rate, stall_after, stall_for = 50.0, 1.0, 1.0
    with fake_lb("--stall-after", str(stall_after), "--stall-for", str(stall_for)) as url:
        background = BackgroundLoad(url, "/api/v1/health", rate=rate, timeout=5.0, max_seconds=3.0)
        background.start()
        assert background.wait(20.0), "the load did not end by itself"
        arrivals = json.loads(fetch(url, "/control/arrivals").body)["arrivals_in_stall"]
    samples = sorted(background.samples, key=lambda s: s.t)
    assert len(samples) == 150 and all(s.outcome == "ok" for s in samples)
    # Sent on schedule: ~50 requests reached the server while it stalled (a closed loop sends 1),
    # and no send left far behind its due time.
    assert arrivals >= 0.6 * rate * stall_for
    assert max(s.lag for s in samples) < 0.3
    # Measured from the intended time: a request due early in the stall waited for its end.
    t0 = samples[0].t
    early_in_stall = [s for s in samples if stall_after + 0.1 <= s.t - t0 <= stall_after + 0.4]
    assert early_in_stall and min(s.seconds for s in early_in_stall) >= 0.45
    assert max(s.seconds for s in samples) >= 0.75
    after_stall = [s for s in samples if s.t - t0 >= stall_after + stall_for + 0.3]
    assert after_stall and sorted(s.seconds for s in after_stall)[len(after_stall) // 2] < 0.2


def test_every_nth_background_request_is_a_post_carrying_its_own_id(lb):
    background = BackgroundLoad(lb, "/api/v1/health", rate=40.0, timeout=2.0, max_seconds=1.0, unsafe_every=4,
                                unsafe_path="/api/v1/plays", id_prefix="run7")
    background.start()
    assert background.wait(15.0), "the load did not end by itself"
    samples = sorted(background.samples, key=lambda s: s.t)
    posts = [s for s in samples if s.method == "POST"]
    assert len(samples) == 40 and len(posts) == 10 and all(s.outcome == "ok" and s.status == 201 for s in posts)
    assert [s.key for s in posts] == [f"run7-{index}" for index in range(3, 40, 4)]
    assert all(s.status == 200 for s in samples if s.method == "GET")
    phases = phase_counts(samples, [("all", samples[0].t)])
    assert phases["all"]["by_method"] == {"GET": {"ok": 30}, "POST": {"ok": 10}}


def test_requests_that_never_end_keep_their_method():
    """Timeouts and the ones cancelled at the end are stamped too, so counts by method add up."""
    with silent_server() as url:
        background = BackgroundLoad(url, "/api/v1/health", rate=20.0, timeout=0.5, max_seconds=0.5, unsafe_every=2,
                                    unsafe_path="/api/v1/plays")
        background.start()
        assert background.wait(10.0)
    methods = sorted(s.method for s in background.samples)
    assert methods == ["GET"] * 5 + ["POST"] * 5 and all(s.outcome == "timeout" for s in background.samples)


# -- error classes ---------------------------------------------------------------------

def _errors(url, **extra):
    settings = LoadSettings(url, rate=20.0, duration=0.5, timeout=1.0, **extra)
    return run_fixed(settings)["scenarios"]["api"]


def test_refused_on_a_closed_port():
    section = _errors(f"http://127.0.0.1:{closed_port()}")
    assert section["errors"] == {"refused": 10} and section["ok"] == 0


def test_timeout_when_nobody_answers():
    with silent_server() as url:
        section = _errors(url)
    assert section["errors"] == {"timeout": 10}


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_reset_when_the_server_closes_at_once(reset):
    with closing_server(reset) as url:
        section = _errors(url)
    assert section["errors"] == {"reset": 10}, section["error_examples"]


def test_status_503_is_a_status_error_with_its_code():
    with fake_lb("--status", "503") as url:
        section = _errors(url)
    assert section["errors"] == {"status": 10} and section["status_codes"] == {"503": 10}
    assert section["latency_ms"]["p50"] is not None  # an answer: its latency counts


# -- scenarios -------------------------------------------------------------------------------

def test_api_split_hls_consistency_and_ws_stickiness(lb):
    settings = LoadSettings(lb, scenarios=("api", "hls", "ws"), rate=100.0, duration=2.0, tracks=8,
                            ws_sessions=4, ws_interval=0.5)
    report = run_fixed(settings)
    api, hls, ws = (report["scenarios"][name] for name in ("api", "hls", "ws"))
    assert api["requests"] == 200 and api["error_count"] == 0
    assert set(api["by_instance"]) == {"backend-api-1", "backend-api-2"}
    assert min(api["by_instance"].values()) >= 80  # the cookie jar is off: round robin, not pinned
    assert hls["track_consistent"] and hls["tracks_seen"] == 8
    assert set(hls["tracks_per_streamer"]) == {"stream-server-1", "stream-server-2"}
    assert ws["sticky"] and ws["requests"] == 16 and ws["error_count"] == 0
    assert sorted(s["pinned"] for s in ws["per_session"]) == ["backend-api-1"] * 2 + ["backend-api-2"] * 2
    assert report["reached"] and report["generator"]["cpu_seconds"] > 0
    # Half of each HTTP scenario on 8 kept-alive connections, counted apart.
    assert api["by_kind"]["new"]["by_method"] == {"GET": {"ok": 100}}
    assert api["by_kind"]["keepalive"]["by_method"] == {"GET": {"ok": 100}}
    assert api["keepalive"] == {"share": 0.5, "connections": 8, "connections_opened": 8}
    assert hls["by_kind"]["keepalive"]["total"] == hls["by_kind"]["new"]["total"] == 100
    assert len(api["timeline"]) >= 2 and api["timeline"][0]["sent"] == 100


def test_ws_echo_from_another_backend_breaks_stickiness():
    with fake_lb("--unsticky") as url:
        report = run_fixed(LoadSettings(url, scenarios=("ws",), duration=1.0, ws_sessions=2, ws_interval=0.5,
                                        backends=["backend-api-1", "backend-api-2"]))
    ws = report["scenarios"]["ws"]
    assert not ws["sticky"] and ws["errors"] == {"other": 4}
    assert "stickiness" in ws["error_examples"]["other"][0]


def test_refused_ws_handshake_is_a_status_error_without_latency(lb):
    report = run_fixed(LoadSettings(lb, scenarios=("ws",), duration=1.0, ws_sessions=2, ws_interval=0.5,
                                    ws_path="/no-such-ws", backends=["backend-api-1"]))
    ws = report["scenarios"]["ws"]
    assert ws["errors"] == {"status": 4} and ws["status_codes"] == {"404": 4}
    assert ws["latency_ms"]["p50"] is None and not ws["sticky"]


def test_ramp_stops_at_max_rate_within_its_budget(lb):
    ramp = RampSettings(factor=2.0, max_rate=400.0, step_seconds=0.5, p99_ms=2000.0, budget_seconds=10.0, start=50.0)
    started = time.monotonic()
    report = run_ramp(LoadSettings(lb, rate=50.0), ramp)
    assert time.monotonic() - started < ramp.budget_seconds + 10  # steps plus drains, far from unbounded
    assert [step["rate"] for step in report["ramp"]["steps"]] == [50, 100, 200, 400], report["ramp"]["steps"]
    assert all(0 < step["generator_cpu_share"] < 2 for step in report["ramp"]["steps"])  # the self-check, per step
    assert report["ramp"]["knee_rps"] == 400 and report["ramp"]["first_failing_rps"] is None


def test_ramp_stops_at_the_first_failing_step():
    with fake_lb("--status", "503") as url:
        report = run_ramp(LoadSettings(url, rate=50.0), RampSettings(step_seconds=0.5, start=50.0))
    assert len(report["ramp"]["steps"]) == 1 and report["ramp"]["knee_rps"] is None
    assert "errors" in report["ramp"]["steps"][0]["reason"]


# -- the facade --------------------------------------------------------------------------------

def test_background_load_stops_on_request_with_samples_for_each_phase(lb):
    background = BackgroundLoad(lb, "/api/v1/health", rate=40.0, timeout=2.0, max_seconds=60.0)
    background.start()
    time.sleep(0.5)
    middle = time.monotonic()
    time.sleep(0.5)
    assert background.stop()
    assert background.stop_reason == "stopped"
    samples = list(background.samples)
    assert 20 <= len(samples) <= 60 and not any(s.failed for s in samples)
    phases = phase_counts(samples, [("first", samples[0].t), ("second", middle), ("never", None)])
    assert set(phases) == {"first", "second"} and phases["first"]["total"] + phases["second"]["total"] == len(samples)
    assert set(phases["first"]["by_instance"]) == {"backend-api-1", "backend-api-2"}


def test_fetch_and_websocket_session(lb):
    reply = fetch(lb, "/api/v1/health")
    assert reply.status == 200 and reply.instance == reply.cookie("SERVERID")
    with pytest.raises(ConnectionRefusedError):
        fetch(f"http://127.0.0.1:{closed_port()}", "/api/v1/health")
    session = open_session(lb.replace("http", "ws") + "/api/v1/ws", cookie="SERVERID=backend-api-2")
    try:
        assert session.greeting["instance"] == "backend-api-2"
        assert session.echo("hello") == {"instance": "backend-api-2", "echo": "hello"}
        assert session.wait_closed(0.3) is None  # still open
    finally:
        session.close()
    with pytest.raises(SessionClosed):
        session.recv_text(0.5)


# -- the task ----------------------------------------------------------------------------------

def _inv(*args):
    """Run ``inv test.load ARGS`` in-process; (exit code, stdout, stderr) via capsys by the caller."""
    program = Program(namespace=Collection(Collection("test", load)))
    try:
        program.run(["inv", "test.load", *args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_task_exit_codes_and_outputs(lb, tmp_path, capsys):
    report, plot = tmp_path / "load.json", tmp_path / "load.svg"
    common = ["--target", lb, "--rate", "50", "--duration", "1"]
    assert _inv(*common, "--threshold", "p99<5s", "--threshold", "errors<0.1%", "--report", str(report),
                "--plot", str(plot)) == 0
    out = capsys.readouterr().out
    assert "PASS api: p99<5s" in out and "PASS api: errors<0.1%" in out
    assert json.loads(report.read_text())["kind"] == "veza-load-report" and plot.read_text().startswith("<svg")
    assert _inv(*common, "--threshold", "p99<1us", "--baseline", str(report), "--threshold", "rate_ratio>0.5") == 99
    out = capsys.readouterr().out
    assert "FAIL api: p99<1us" in out and "baseline api:" in out
    assert _inv("--target", lb, "--rate", "0") == 2
    assert capsys.readouterr().err.strip() == "error: --rate 0: must be > 0 and <= 50000 requests/s"
    assert _inv("--target", lb, "--threshold", "p99<<5") == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "failover.json").write_text('{"passed": true}')
    assert _inv("--target", lb, "--baseline", str(tmp_path / "failover.json")) == 2
    assert "not a load report" in capsys.readouterr().err
    assert _inv("--target", f"http://127.0.0.1:{closed_port()}", "--rate", "10", "--duration", "0.5") == 1
    assert "no request got an answer" in capsys.readouterr().err
