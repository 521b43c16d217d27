"""Unit tests of the load-test engine's pure parts: thresholds, baseline, classification, stats,
counters, ramp bounds, report writing, SVG, and that importing the engine stays light."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fabfile.loadtest import REPORT_KIND, LoadTestError
from fabfile.loadtest.baseline import compare, load_baseline
from fabfile.loadtest.counters import counters_section, deltas, read_or_note, snapshot
from fabfile.loadtest.engine import LoadSettings, RampSettings, ramp_rates, validate
from fabfile.loadtest.outcomes import Sample, classify_exception, instance_from_body, outcome_of_status
from fabfile.files import write_atomic
from fabfile.loadtest.report import finish, write_report
from fabfile.loadtest.stats import ScenarioStats
from fabfile.loadtest.svg import render_svg
from fabfile.loadtest.thresholds import evaluate, parse_all, parse_one

REPO = Path(__file__).resolve().parent.parent


# -- thresholds -------------------------------------------------------------------

@pytest.mark.parametrize("text, metric, op, limit", [
    ("p99<50ms", "p99", "<", 50.0),
    ("p90<=20ms", "p90", "<=", 20.0),
    ("p99.9 < 0.2s", "p99.9", "<", 200.0),
    ("max<1500us", "max", "<", 1.5),
    ("errors<0.1%", "errors", "<", 0.001),
    ("errors<=0.02", "errors", "<=", 0.02),
    ("rate>=100", "rate", ">=", 100.0),
    ("rate>=100/s", "rate", ">=", 100.0),
    ("p99_ratio<1.2", "p99_ratio", "<", 1.2),
])
def test_thresholds_parse(text, metric, op, limit):
    threshold = parse_one(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)


@pytest.mark.parametrize("text", ["p99<<5", "p99", "latency<5ms", "p99<5kg", "errors<5ms", "rate>=5ms",
                                  "errors<200%", "foo:p99<5ms", "p99_ratio<1.2ms", "<5", "p99<-5ms", ""])
def test_unparsable_thresholds_are_one_line_errors(text):
    with pytest.raises(LoadTestError) as caught:
        parse_one(text)
    assert "\n" not in str(caught.value) and text.strip() in str(caught.value)


def test_thresholds_split_on_commas_and_scope_to_a_scenario():
    parsed = parse_all(["p99<50ms, errors<0.1%", "hls:rate>=10"])
    assert [t.metric for t in parsed] == ["p99", "errors", "rate"]
    assert parsed[2].scenario == "hls"


def _section(p99=10.0, p90=5.0, error_rate=0.0, rate=120.0):
    return {"latency_ms": {"p50": 1.0, "p90": p90, "p99": p99, "p99.9": p99, "max": p99, "mean": 1.0},
            "error_rate": error_rate, "throughput_rps": rate}


def test_threshold_evaluation_passes_and_fails_per_scenario():
    scenarios = {"api": _section(p99=49.9, error_rate=0.0009), "hls": _section(p99=50.0, rate=99.0)}
    verdicts = evaluate(parse_all(["p99<50ms", "errors<0.1%", "rate>=100", "api:p90<=5ms"]), scenarios)
    results = {(v.threshold.text, v.scenario): v.passed for v in verdicts}
    assert results == {("p99<50ms", "api"): True, ("p99<50ms", "hls"): False,
                       ("errors<0.1%", "api"): True, ("errors<0.1%", "hls"): True,
                       ("rate>=100", "api"): True, ("rate>=100", "hls"): False, ("api:p90<=5ms", "api"): True}
    assert verdicts[1].line().startswith("FAIL hls: p99<50ms (observed 50.00 ms)")


def test_threshold_without_data_fails():
    empty = _section()
    empty["latency_ms"] = {key: None for key in empty["latency_ms"]}
    [verdict] = evaluate(parse_all("p99<50ms"), {"api": empty})
    assert not verdict.passed and "no data" in verdict.line()


def test_finish_sets_passed_from_thresholds_and_reach():
    report = {"scenarios": {"api": _section(p99=80.0)}, "reached": True}
    finish(report, parse_all("p99<50ms"))
    assert report["passed"] is False and report["thresholds"][0]["observed"] == 80.0
    report = {"scenarios": {"api": _section()}, "reached": False}
    finish(report, [])
    assert report["passed"] is False


# -- baseline ---------------------------------------------------------------------

def test_baseline_of_another_shape_is_one_line(tmp_path):
    cases = {"failover.json": {"passed": True, "steps": []},
             "old.json": {"kind": REPORT_KIND, "version": 0, "scenarios": {}},
             "list.json": [1, 2],
             "noscen.json": {"kind": REPORT_KIND, "version": 1}}
    for name, content in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(LoadTestError) as caught:
            load_baseline(str(tmp_path / name))
        assert "\n" not in str(caught.value)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(LoadTestError, match="not JSON"):
        load_baseline(str(tmp_path / "bad.json"))
    with pytest.raises(LoadTestError, match="missing.json"):
        load_baseline(str(tmp_path / "missing.json"))


def test_baseline_ratios_and_ratio_thresholds():
    baseline = {"kind": REPORT_KIND, "version": 1, "scenarios": {"api": _section(p99=10.0, rate=200.0)}}
    scenarios = {"api": _section(p99=13.0, rate=150.0), "hls": _section()}
    comparisons = compare(scenarios, baseline)
    assert comparisons["api"]["p99_ratio"] == 1.3 and comparisons["api"]["rate_ratio"] == 0.75
    assert "hls" not in comparisons  # not in the baseline: nothing to compare
    verdicts = evaluate(parse_all("api:p99_ratio<1.2, api:rate_ratio>=0.7"), scenarios, comparisons)
    assert [v.passed for v in verdicts] == [False, True]


# -- classification and parsing ------------------------------------------------------

def test_exception_classes():
    refused = OSError(errno.ECONNREFUSED, "Connection refused")
    wrapped = RuntimeError("connect failed")
    wrapped.os_error = refused  # aiohttp's ClientConnectorError carries it like this
    assert classify_exception(ConnectionRefusedError()) == "refused"
    assert classify_exception(wrapped) == "refused"
    assert classify_exception(TimeoutError()) == "timeout"
    assert classify_exception(ConnectionResetError()) == "reset"
    disconnected = type("ServerDisconnectedError", (Exception,), {})()
    assert classify_exception(disconnected) == "reset"
    assert classify_exception(ValueError("x")) == "other"


def test_status_outcomes_and_instances():
    assert [outcome_of_status(s) for s in (200, 204, 302, 404, 503)] == ["ok", "ok", "ok", "status", "status"]
    assert instance_from_body('{"status":"ok","instance":"backend-api-2"}') == "backend-api-2"
    assert instance_from_body("stream-server instance=stream-server-1 track=t1 version=v1\n") == "stream-server-1"
    assert instance_from_body("<html>") is None and instance_from_body("{broken") is None


# -- stats ----------------------------------------------------------------------------

def test_stats_buckets_by_intended_time_and_counts_classes():
    stats = ScenarioStats("api", t0=100.0)
    stats.record(Sample(100.2, "ok", 200, "backend-api-1", 0.010))
    stats.record(Sample(100.7, "ok", 200, "backend-api-2", 1.500))  # due in second 0, answered in second 2
    stats.record(Sample(101.1, "status", 503, None, 0.002, "HTTP 503"))
    stats.record(Sample(101.5, "timeout", None, None, 2.0, "timed out"))
    summary = stats.summary(wall_seconds=2.0)
    assert summary["requests"] == 4 and summary["ok"] == 2 and summary["error_rate"] == 0.5
    assert summary["errors"] == {"status": 1, "timeout": 1} and summary["status_codes"] == {"200": 2, "503": 1}
    assert summary["by_instance"] == {"backend-api-1": 1, "backend-api-2": 1}
    assert summary["latency_ms"]["max"] == pytest.approx(1500, rel=0.01)  # timeouts are not latencies
    timeline = summary["timeline"]
    assert [row["sent"] for row in timeline] == [2, 2, 0]
    assert [row["completed"] for row in timeline] == [1, 1, 1]
    assert timeline[0]["p99_ms"] == pytest.approx(1500, rel=0.02)


# -- counters ----------------------------------------------------------------------------

class FakeRuntime:
    def __init__(self, *snapshots):
        self.snapshots = list(snapshots)

    def show_stat(self, include_aggregates=False):
        assert include_aggregates
        rows = self.snapshots.pop(0)
        if isinstance(rows, Exception):
            raise rows
        return [SimpleNamespace(pool=p, server=s, raw=raw) for p, s, raw in rows]


def test_counter_deltas_per_server():
    before = [("api_pool", "backend-api-1", {"wretr": "1", "wredis": "0", "econ": "2"}),
              ("api_pool", "BACKEND", {"wretr": "1"})]
    after = [("api_pool", "backend-api-1", {"wretr": "4", "wredis": "2", "econ": "2"}),
             ("api_pool", "backend-api-2", {"wretr": "", "hrsp_5xx": "3"}),
             ("api_pool", "BACKEND", {"wretr": "4"})]
    runtime = FakeRuntime(before, after)
    section = counters_section(snapshot(runtime), snapshot(runtime), "")
    assert section["deltas"]["api_pool/backend-api-1"]["wretr"] == 3
    assert section["deltas"]["api_pool/backend-api-2"]["hrsp_5xx"] == 3
    assert section["retries"] == 3 and section["redispatches"] == 2  # aggregates not double counted
    assert deltas({"a/b": {"wretr": 9}}, {"a/b": {"wretr": 2}})["a/b"]["wretr"] == 2  # counters were reset


def test_counters_of_a_balancer_pair_are_summed():
    """With a VIP the traffic went through either balancer: a retry seen by the peer counts too."""
    from fabfile.balancers import BalancerSet

    first = FakeRuntime([("api_pool", "backend-api-1", {"wretr": "1"})], [("api_pool", "backend-api-1", {"wretr": "1"})])
    second = FakeRuntime([("api_pool", "backend-api-1", {"wretr": "0"})], [("api_pool", "backend-api-1", {"wretr": "5"})])
    first.name, second.name, first.address = "haproxy", "haproxy-2", "/run/haproxy/admin.sock"
    pair = BalancerSet([first, second])
    before = snapshot(pair)
    assert before["api_pool/backend-api-1"]["wretr"] == 1
    assert counters_section(before, snapshot(pair), "")["retries"] == 5


def test_unreadable_counters_are_a_note_not_a_failure():
    before, note = read_or_note(FakeRuntime(RuntimeError("socat: connection refused")))
    assert before is None and "socat" in note
    assert counters_section(None, None, note) == {"available": False, "note": "RuntimeError: socat: connection refused"}


# -- validation and ramp bounds -----------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"rate": 0}, "--rate 0"), ({"rate": float("nan")}, "--rate"), ({"duration": 0}, "--duration"),
    ({"duration": 99999}, "--duration"), ({"scenarios": ("api", "ftp")}, "scenario ftp"),
    ({"base_url": "10.0.0.1:80"}, "target"), ({"tracks": 0}, "--tracks"),
])
def test_bad_settings_are_refused(change, message):
    settings = LoadSettings("http://127.0.0.1:1")
    for key, value in change.items():
        setattr(settings, key, value)
    with pytest.raises(LoadTestError, match=message.replace("-", r"\-")):
        validate(settings)


def test_ramp_rates_stay_within_max_rate_and_budget():
    assert ramp_rates(RampSettings(factor=2, max_rate=400, step_seconds=1, budget_seconds=60, start=50)) == \
        [50, 100, 200, 400]
    assert len(ramp_rates(RampSettings(factor=1.01, max_rate=5000, step_seconds=5, budget_seconds=20, start=1))) == 4
    assert ramp_rates(RampSettings(factor=3, max_rate=100, step_seconds=5, budget_seconds=20, start=100)) == [100]
    with pytest.raises(LoadTestError, match="HTTP scenario"):
        validate(LoadSettings("http://127.0.0.1:1", scenarios=("ws",)), RampSettings())


# -- files ---------------------------------------------------------------------------------

def test_report_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    write_report(str(link), {"kind": REPORT_KIND})
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and json.loads(link.read_text()) == {"kind": REPORT_KIND}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "x").write_text("")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        write_atomic(str(target), "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]


def test_svg_renders_every_scenario_and_parses():
    import xml.dom.minidom

    scenario = _section() | {"target_rate": 100, "timeline": [
        {"t": 0, "sent": 100, "ok": 99, "errors": 1, "completed": 99, "p50_ms": 1.0, "p99_ms": 3.0},
        {"t": 1, "sent": 100, "ok": 100, "errors": 0, "completed": 100, "p50_ms": None, "p99_ms": None}]}
    report = {"target": "http://lb:80", "mode": "fixed", "passed": False, "generator": {"cpu_share": 0.2},
              "scenarios": {"api": scenario, "hls": scenario}}
    svg = render_svg(report)
    xml.dom.minidom.parseString(svg)
    assert "Load FAILED" in svg and ">api<" in svg and ">hls<" in svg and "1 errors" in svg


def test_engine_imports_no_network_or_fabric_library():
    """Importing every engine module (without fabfile/__init__, which loads all tasks) stays light."""
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('fabfile'); package.__path__ = [{str(REPO / 'fabfile')!r}]\n"
        "sys.modules['fabfile'] = package\n"
        "import fabfile.loadtest.engine, fabfile.loadtest.facade, fabfile.loadtest.report, fabfile.loadtest.svg\n"
        "heavy = ('fabric', 'paramiko', 'invoke', 'aiohttp', 'websockets', 'hdrh')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_hls_track_on_two_streamers_is_a_violation():
    from fabfile.loadtest.http_load import HlsScenario

    hls = HlsScenario(tracks=2)
    assert hls.request(0) == ("/hls/track-000/segment-00000.ts", "track-000")
    assert hls.request(3) == ("/hls/track-001/segment-00001.ts", "track-001")
    for instance in ("stream-server-1", "stream-server-1", "stream-server-2"):
        hls.observe(Sample(0.0, "ok", 200, instance, 0.001, key="track-000"))
    hls.observe(Sample(0.0, "ok", 200, "stream-server-2", 0.001, key="track-001"))
    report = hls.report()
    assert not report["track_consistent"]
    assert report["track_violations"] == {"track-000": {"stream-server-1": 2, "stream-server-2": 1}}
    assert report["tracks_per_streamer"] == {"stream-server-1": 1, "stream-server-2": 1}
